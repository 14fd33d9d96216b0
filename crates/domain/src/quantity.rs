//! Kubernetes `resource.Quantity` strings: the values we serve, and the CPU and memory quantities we read from
//! pod specs (one exact parser for both).
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

/// Parses a Kubernetes CPU quantity (`"250m"`, `"1"`, `"0.5"`, `"2k"`, `"1e3"`) into milli-cores, rounding a
/// fractional milli up as apimachinery's `MilliValue()` does. Binary suffixes are accepted too because the
/// apiserver accepts them for any resource.
pub fn parse_cpu_milli(text: &str) -> Option<i64> {
    parse_scaled(text, 3)
}

/// Parses a Kubernetes memory quantity (`"512Mi"`, `"1G"`, `"129e6"`) into bytes, rounding a fractional byte up
/// as apimachinery's `Value()` does.
pub fn parse_memory_bytes(text: &str) -> Option<i64> {
    parse_scaled(text, 0)
}

/// Parses a `resource.Quantity` string into its value times `10^scale`, rounded towards +infinity, with exact
/// integer arithmetic (no float noise on `"1.5Gi"` or `"250m"`).
///
/// Accepts the decimal SI suffixes `n u m "" k M G T P E`, the binary suffixes `Ki Mi Gi Ti Pi Ei` and decimal
/// exponents (`1e3`, `12E6`). Returns `None` for malformed text and for values outside `i64`.
fn parse_scaled(text: &str, scale: u32) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (negative, digits) = match number.as_bytes().first() {
        Some(b'-') => (true, &number[1..]),
        Some(b'+') => (false, &number[1..]),
        _ => (false, number),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    // Mantissa as an exact fraction numerator / denominator.
    let mut numerator: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        numerator = numerator
            .checked_mul(10)?
            .checked_add(i128::from(b - b'0'))?;
    }
    let mut denominator: i128 = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let pow10 = |e: u32| 10i128.checked_pow(e);
    let (multiply, divide): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, pow10(9)?),
        "u" => (1, pow10(6)?),
        "m" => (1, pow10(3)?),
        "k" => (pow10(3)?, 1),
        "M" => (pow10(6)?, 1),
        "G" => (pow10(9)?, 1),
        "T" => (pow10(12)?, 1),
        "P" => (pow10(15)?, 1),
        "E" => (pow10(18)?, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.len() > 1 && s.starts_with(['e', 'E']) => {
            let exponent: i32 = s[1..].parse().ok()?;
            if exponent >= 0 {
                (pow10(exponent.unsigned_abs())?, 1)
            } else {
                (1, pow10(exponent.unsigned_abs())?)
            }
        }
        _ => return None,
    };
    numerator = numerator
        .checked_mul(multiply)?
        .checked_mul(pow10(scale)?)?;
    denominator = denominator.checked_mul(divide)?;
    // Round up (towards +infinity), as `Quantity.Value()` and `MilliValue()` do.
    let value = if negative {
        -(numerator / denominator)
    } else {
        numerator.checked_add(denominator - 1)? / denominator
    };
    i64::try_from(value).ok()
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

    #[test]
    fn plain_and_decimal_suffixes() {
        assert_eq!(parse_memory_bytes("0"), Some(0));
        assert_eq!(parse_memory_bytes("1024"), Some(1024));
        assert_eq!(parse_memory_bytes("128974848"), Some(128_974_848));
        assert_eq!(parse_memory_bytes("1k"), Some(1000));
        assert_eq!(parse_memory_bytes("129M"), Some(129_000_000));
        assert_eq!(parse_memory_bytes("2G"), Some(2_000_000_000));
        assert_eq!(parse_memory_bytes("1T"), Some(1_000_000_000_000));
        assert_eq!(parse_memory_bytes("1P"), Some(1_000_000_000_000_000));
        assert_eq!(parse_memory_bytes("2E"), Some(2_000_000_000_000_000_000));
    }

    #[test]
    fn binary_suffixes() {
        assert_eq!(parse_memory_bytes("1Ki"), Some(1024));
        assert_eq!(parse_memory_bytes("64Mi"), Some(64 << 20));
        assert_eq!(parse_memory_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_memory_bytes("2Ti"), Some(2 << 40));
        assert_eq!(parse_memory_bytes("1Pi"), Some(1 << 50));
        assert_eq!(parse_memory_bytes("1Ei"), Some(1 << 60));
    }

    #[test]
    fn exponents_and_fractions_round_uparse_memory_bytes() {
        assert_eq!(parse_memory_bytes("129e6"), Some(129_000_000));
        assert_eq!(parse_memory_bytes("1E3"), Some(1000));
        assert_eq!(parse_memory_bytes("5e-1"), Some(1));
        assert_eq!(parse_memory_bytes("0.5"), Some(1));
        assert_eq!(parse_memory_bytes("1500m"), Some(2));
        assert_eq!(parse_memory_bytes("128974848000m"), Some(128_974_848));
        assert_eq!(parse_memory_bytes("100n"), Some(1));
        assert_eq!(parse_memory_bytes(" 256Mi "), Some(256 << 20));
        assert_eq!(parse_memory_bytes(".5Ki"), Some(512));
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in [
            "",
            "Mi",
            "1.2.3",
            "1MB",
            "1mi",
            "abc",
            "1e",
            "--1",
            "1 Mi",
            "8Ei",
            "99999999999E",
        ] {
            assert_eq!(parse_memory_bytes(bad), None, "{bad:?}");
        }
        assert_eq!(parse_memory_bytes("-1Ki"), Some(-1024));
    }

    #[test]
    fn cpu_takes_every_suffix_exactly() {
        assert_eq!(parse_cpu_milli("1Pi"), Some(1_125_899_906_842_624_000));
        assert_eq!(parse_cpu_milli("1Ti"), Some(1_099_511_627_776_000));
        assert_eq!(parse_cpu_milli("0.1"), Some(100));
        assert_eq!(parse_cpu_milli("0.0001"), Some(1), "sub-milli rounds up");
        assert_eq!(parse_cpu_milli("-0.0001"), Some(0), "towards +infinity");
        assert_eq!(parse_cpu_milli("1.1"), Some(1100), "no float noise");
        assert_eq!(parse_cpu_milli("8E"), None, "outside i64 milli-cores");
    }
}
