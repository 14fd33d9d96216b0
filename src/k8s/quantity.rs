//! Memory quantities (`resource.Quantity` strings such as `"512Mi"`, `"1G"`, `"129e6"`) in bytes.
//!
//! CPU goes through [`crate::domain::quantity::parse_cpu_milli`]; memory needs whole bytes and binary suffixes,
//! so it is parsed here with exact integer arithmetic (no float rounding on `"1.5Gi"`).

/// Parses a Kubernetes quantity into bytes, rounding a fractional result up as apimachinery's `Value()` does.
///
/// Accepts the decimal SI suffixes `n u m "" k M G T P E`, the binary suffixes `Ki Mi Gi Ti Pi Ei` and decimal
/// exponents (`1e3`, `12E6`). Returns `None` for malformed text and for values outside `i64`.
pub fn parse_memory_bytes(text: &str) -> Option<i64> {
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
    numerator = numerator.checked_mul(multiply)?;
    denominator = denominator.checked_mul(divide)?;
    // Round up (towards +infinity) for positive values, as `Quantity.Value()` does.
    let bytes = if negative {
        -(numerator / denominator)
    } else {
        numerator.checked_add(denominator - 1)? / denominator
    };
    i64::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_memory_bytes as p;

    #[test]
    fn plain_and_decimal_suffixes() {
        assert_eq!(p("0"), Some(0));
        assert_eq!(p("1024"), Some(1024));
        assert_eq!(p("128974848"), Some(128_974_848));
        assert_eq!(p("1k"), Some(1000));
        assert_eq!(p("129M"), Some(129_000_000));
        assert_eq!(p("2G"), Some(2_000_000_000));
        assert_eq!(p("1T"), Some(1_000_000_000_000));
        assert_eq!(p("1P"), Some(1_000_000_000_000_000));
        assert_eq!(p("2E"), Some(2_000_000_000_000_000_000));
    }

    #[test]
    fn binary_suffixes() {
        assert_eq!(p("1Ki"), Some(1024));
        assert_eq!(p("64Mi"), Some(64 << 20));
        assert_eq!(p("1.5Gi"), Some(3 << 29));
        assert_eq!(p("2Ti"), Some(2 << 40));
        assert_eq!(p("1Pi"), Some(1 << 50));
        assert_eq!(p("1Ei"), Some(1 << 60));
    }

    #[test]
    fn exponents_and_fractions_round_up() {
        assert_eq!(p("129e6"), Some(129_000_000));
        assert_eq!(p("1E3"), Some(1000));
        assert_eq!(p("5e-1"), Some(1));
        assert_eq!(p("0.5"), Some(1));
        assert_eq!(p("1500m"), Some(2));
        assert_eq!(p("128974848000m"), Some(128_974_848));
        assert_eq!(p("100n"), Some(1));
        assert_eq!(p(" 256Mi "), Some(256 << 20));
        assert_eq!(p(".5Ki"), Some(512));
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
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(p("-1Ki"), Some(-1024));
    }
}
