//! Kubernetes `resource.Quantity` strings for the values we serve.
//!
//! The HPA reads every item with `MilliValue()`, so values are kept as integer milli-units and printed in the
//! canonical DecimalSI form apimachinery itself produces (`1.5` → `"1500m"`, `3000` → `"3k"`).

/// Converts a float to milli-units, rounding to the nearest milli. Non-finite values have no quantity.
pub fn to_milli(value: f64) -> Option<i64> {
    if !value.is_finite() {
        return None;
    }
    let milli = (value * 1000.0).round();
    if milli >= i64::MAX as f64 || milli <= i64::MIN as f64 {
        return None;
    }
    Some(milli as i64)
}

/// Prints milli-units as a canonical DecimalSI quantity: a plain integer with the largest SI suffix that keeps
/// the mantissa whole, or an `m` suffix when there is a fractional part.
pub fn format_milli(milli: i64) -> String {
    if milli == 0 {
        return "0".to_string();
    }
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut whole = milli / 1000;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    while whole % 1000 == 0 && suffix + 1 < SUFFIXES.len() {
        whole /= 1000;
        suffix += 1;
    }
    format!("{whole}{}", SUFFIXES[suffix])
}

/// Formats a float as a canonical quantity, or `None` for NaN and infinities.
pub fn format_value(value: f64) -> Option<String> {
    to_milli(value).map(format_milli)
}

/// Parses a Kubernetes CPU quantity (`"250m"`, `"1"`, `"0.5"`, `"2k"`) into milli-cores. Binary suffixes are
/// accepted too because the apiserver accepts them for any resource.
pub fn parse_cpu_milli(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    // Multipliers straight to milli-units, so exact inputs such as "250m" stay exact.
    let milli_factor = match suffix {
        "n" => 1e-6,
        "u" => 1e-3,
        "m" => 1.0,
        "" => 1e3,
        "k" => 1e6,
        "M" => 1e9,
        "G" => 1e12,
        "T" => 1e15,
        "Ki" => 1024e3,
        "Mi" => 1024.0 * 1024e3,
        "Gi" => 1024.0 * 1024.0 * 1024e3,
        s if s.starts_with(['e', 'E']) => 1e3 * 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    // apimachinery rounds sub-milli precision up; the epsilon absorbs float noise on exact values.
    let milli = (number * milli_factor - 1e-6).ceil();
    (milli.is_finite() && milli.abs() < 9e18).then_some(milli as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_from_reference() {
        let cases = [
            (1.5, "1500m"),
            (1.08, "1080m"),
            (0.08, "80m"),
            (3000.0, "3k"),
            (1_234_567_000_000.0, "1234567M"),
            (0.0, "0"),
            (-9.01, "-9010m"),
            (2.0, "2"),
            (1500.0, "1500"),
            (72.0, "72"),
        ];
        for (value, want) in cases {
            assert_eq!(format_value(value).as_deref(), Some(want), "value {value}");
        }
    }

    #[test]
    fn non_finite_has_no_quantity() {
        assert_eq!(format_value(f64::NAN), None);
        assert_eq!(format_value(f64::INFINITY), None);
        assert_eq!(format_value(1e300), None);
    }

    #[test]
    fn rounds_to_nearest_milli() {
        assert_eq!(format_value(72.0004).as_deref(), Some("72"));
        assert_eq!(format_value(72.0006).as_deref(), Some("72001m"));
        assert_eq!(format_value(-0.0001).as_deref(), Some("0"));
    }

    #[test]
    fn large_values_fold_suffixes() {
        assert_eq!(format_milli(5_000_000_000), "5M");
        assert_eq!(format_milli(1_000_000_000_000_000_000), "1P");
        assert_eq!(format_milli(-3_000_000), "-3k");
    }

    #[test]
    fn parses_cpu_requests() {
        assert_eq!(parse_cpu_milli("250m"), Some(250));
        assert_eq!(parse_cpu_milli("1"), Some(1000));
        assert_eq!(parse_cpu_milli("0.5"), Some(500));
        assert_eq!(parse_cpu_milli("1.5"), Some(1500));
        assert_eq!(parse_cpu_milli("100000n"), Some(1));
        assert_eq!(parse_cpu_milli("2k"), Some(2_000_000));
        assert_eq!(parse_cpu_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_cpu_milli("abc"), None);
        assert_eq!(parse_cpu_milli(""), None);
        assert_eq!(parse_cpu_milli("5x"), None);
    }
}
