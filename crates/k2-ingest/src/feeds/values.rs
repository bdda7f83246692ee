//! Values read from frame text exactly: prices and quantities as fixed-point decimals
//! (never through a float, exponents included), and the readable ids of records.

use std::str::FromStr;

use k2_model::Text;
use k2_model::decimal::Decimal8;

use super::FrameError;

/// A positive price or quantity, from decimal text (`"0.00100000"`) or a JSON number's
/// text (`0.5117`, `1.5e-5`), exactly.
#[inline]
pub(super) fn positive(field: &str, text: &str) -> Result<Decimal8, FrameError> {
    let d = exact_decimal(text).ok_or_else(|| {
        FrameError::invalid(format!(
            "{field} '{text}' is not a decimal K2 holds exactly (18 digits, 8 after the point)"
        ))
    })?;
    if d.units() <= 0 {
        return Err(FrameError::invalid(format!(
            "{field} {text} is not positive"
        )));
    }
    Ok(d)
}

/// Decimal text with an optional exponent, as an exact 10^-8 fixed-point value.
#[inline]
pub(super) fn exact_decimal(text: &str) -> Option<Decimal8> {
    // Plain decimal text, nearly every value, in one pass; quotes and exponents after.
    if let Ok(d) = Decimal8::from_str(text) {
        return Some(d);
    }
    let text = text.trim_matches('"');
    let (mantissa, exp) = match text.find(['e', 'E']) {
        None => (text, 0i32),
        Some(i) => (&text[..i], text[i + 1..].parse().ok()?),
    };
    if exp == 0 {
        return Decimal8::from_str(mantissa).ok();
    }
    let (sign, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !(int.chars().chain(frac.chars())).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // Move the point `exp` places; then it is plain decimal text again.
    let all: String = format!("{int}{frac}");
    let point = int.len() as i32 + exp;
    let plain = if point <= 0 {
        format!("0.{}{all}", "0".repeat((-point) as usize))
    } else if point as usize >= all.len() {
        format!("{all}{}", "0".repeat(point as usize - all.len()))
    } else {
        format!("{}.{}", &all[..point as usize], &all[point as usize..])
    };
    let plain = trim_fraction(&plain);
    Decimal8::from_str(&format!("{sign}{plain}")).ok()
}

/// Trailing zeros after the point carry no value (and may exceed the 8 digits).
#[inline]
fn trim_fraction(text: &str) -> &str {
    match text.split_once('.') {
        Some(_) => text.trim_end_matches('0').trim_end_matches('.'),
        None => text,
    }
}

/// The readable id of a trade or quote: `{EXCHANGE}-{symbol}-{venue's id}`.
#[inline]
pub(super) fn native_id(exchange: &str, symbol: &str, id: &str) -> Text {
    // Put together on the stack and copied once: pushing part by part onto the text
    // costs more than the copy.
    let mut buf = [0u8; 96];
    let mut len = 0;
    for part in [exchange, "-", symbol, "-", id] {
        let Some(room) = buf.get_mut(len..len + part.len()) else {
            return [exchange, symbol, id].join("-").into();
        };
        room.copy_from_slice(part.as_bytes());
        len += part.len();
    }
    // Whole UTF-8 parts put end to end are UTF-8.
    Text::from_utf8(&buf[..len]).expect("parts of text")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_exponents_are_exact() {
        for (text, units) in [
            ("1e0", 100_000_000),
            ("2.5E+2", 25_000_000_000),
            ("1.5e-8", -1),
            ("12e-8", 12),
            ("0.10", 10_000_000),
        ] {
            assert_eq!(
                exact_decimal(text).map_or(-1, |d| d.units()),
                units,
                "{text}"
            );
        }
    }
}
