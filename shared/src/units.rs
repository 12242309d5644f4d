//! Physical and carbon units as types, so that a watt never passes for a watt-hour.
//!
//! Every unit is a transparent `f64` newtype that serialises as a bare JSON number. Conversions are
//! explicit methods whose factors are exact SI definitions (1 Wh = 3600 J, 1 kWh = 1000 Wh,
//! 1 kg = 1000 g).

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign, Sub};

macro_rules! unit {
    ($(#[$doc:meta])* $name:ident, $symbol:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub f64);

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                number_schema(concat!("Unit: ", $symbol)).into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl $name {
            /// Zero of this unit.
            pub const ZERO: Self = Self(0.0);

            /// The bare value, in this unit.
            #[must_use]
            pub fn value(self) -> f64 {
                self.0
            }

            /// True when the value is finite and not negative (what every measured quantity must be).
            #[must_use]
            pub fn is_physical(self) -> bool {
                self.0.is_finite() && self.0 >= 0.0
            }
        }

        impl Add for $name {
            type Output = Self;
            fn add(self, rhs: Self) -> Self {
                Self(self.0 + rhs.0)
            }
        }

        impl AddAssign for $name {
            fn add_assign(&mut self, rhs: Self) {
                self.0 += rhs.0;
            }
        }

        impl Sub for $name {
            type Output = Self;
            fn sub(self, rhs: Self) -> Self {
                Self(self.0 - rhs.0)
            }
        }

        impl std::iter::Sum for $name {
            fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
                // Fold from +0.0: `f64::sum` of an empty iterator is -0.0, which would print as "-0".
                Self(iter.fold(0.0, |acc, v| acc + v.0))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                if let Some(p) = f.precision() {
                    write!(f, "{:.*} {}", p, self.0, $symbol)
                } else {
                    write!(f, "{} {}", self.0, $symbol)
                }
            }
        }
    };
}

#[cfg(feature = "openapi")]
fn number_schema(description: &str) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
        .description(Some(description))
        .build()
}

unit!(
    /// Power in watts (W).
    Watts, "W"
);
unit!(
    /// Energy in joules (J).
    Joules, "J"
);
unit!(
    /// Energy in watt-hours (Wh). The wire contract carries energy in Wh.
    WattHours, "Wh"
);
unit!(
    /// Carbon intensity of electricity in grams of CO2-equivalent per kilowatt-hour (gCO2e/kWh).
    GramsCo2ePerKwh, "gCO2e/kWh"
);
unit!(
    /// Mass of CO2-equivalent in kilograms (kgCO2e).
    KgCo2e, "kgCO2e"
);

/// Joules in one watt-hour (SI: 1 W × 3600 s).
pub const JOULES_PER_WATT_HOUR: f64 = 3600.0;

impl Joules {
    /// Converts to watt-hours (÷ 3600).
    #[must_use]
    pub fn to_watt_hours(self) -> WattHours {
        WattHours(self.0 / JOULES_PER_WATT_HOUR)
    }

    /// Mean power over `seconds`; zero when `seconds` is not positive.
    #[must_use]
    pub fn mean_power(self, seconds: f64) -> Watts {
        if seconds > 0.0 {
            Watts(self.0 / seconds)
        } else {
            Watts::ZERO
        }
    }
}

impl WattHours {
    /// Converts to joules (× 3600).
    #[must_use]
    pub fn to_joules(self) -> Joules {
        Joules(self.0 * JOULES_PER_WATT_HOUR)
    }

    /// Converts to kilowatt-hours (÷ 1000), as a bare number for display and CSV columns.
    #[must_use]
    pub fn kwh(self) -> f64 {
        self.0 / 1000.0
    }

    /// Location-based emissions of this energy at `intensity`: Wh ÷ 1000 × g/kWh ÷ 1000 = kg.
    #[must_use]
    pub fn emissions(self, intensity: GramsCo2ePerKwh) -> KgCo2e {
        KgCo2e(self.kwh() * intensity.0 / 1000.0)
    }
}

impl Watts {
    /// Energy of this power held for `seconds`: W × s = J.
    #[must_use]
    pub fn over_seconds(self, seconds: f64) -> Joules {
        Joules(self.0 * seconds)
    }
}

impl KgCo2e {
    /// Converts to tonnes (÷ 1000), the unit carbon prices are quoted in.
    #[must_use]
    pub fn tonnes(self) -> f64 {
        self.0 / 1000.0
    }

    /// Converts to grams (× 1000).
    #[must_use]
    pub fn grams(self) -> f64 {
        self.0 * 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_exact_si() {
        assert_eq!(Joules(7200.0).to_watt_hours(), WattHours(2.0));
        assert_eq!(WattHours(2.0).to_joules(), Joules(7200.0));
        assert_eq!(Watts(50.0).over_seconds(72.0), Joules(3600.0));
        // 1 kWh at 200 g/kWh is 0.2 kg.
        let kg = WattHours(1000.0).emissions(GramsCo2ePerKwh(200.0));
        assert!((kg.0 - 0.2).abs() < 1e-12);
        assert_eq!(Joules(100.0).mean_power(0.0), Watts::ZERO);
        assert!(!WattHours(f64::NAN).is_physical());
        assert!(!WattHours(-1.0).is_physical());
        assert_eq!(format!("{:.2}", Watts(1.234)), "1.23 W");
    }
}

/// An amount of euros held exactly as an integer number of micro-euros (10⁻⁶ EUR), so that
/// splits add up to the cent and beyond. On the wire it is a decimal string with six decimals,
/// e.g. `"0.001234"`, because JSON numbers are binary floating point in most parsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Eur {
    micros: i64,
}

impl Eur {
    /// From a count of micro-euros.
    #[must_use]
    pub fn from_micros(micros: i64) -> Self {
        Self { micros }
    }

    /// The count of micro-euros.
    #[must_use]
    pub fn micros(self) -> i64 {
        self.micros
    }

    /// Parses `"-?D+(.D{1,6})?"`; `None` for anything else (more than six decimals included).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        parse_millionths(text).map(Self::from_micros)
    }
}

/// Parses `"-?D+(.D{1,6})?"` into a count of millionths; `None` for anything else.
fn parse_millionths(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || frac.len() > 6
        || !all_digits(whole)
        || !all_digits(frac)
        || (digits.contains('.') && frac.is_empty())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    let millionths = whole.checked_mul(1_000_000)?.checked_add(frac)?;
    Some(if negative { -millionths } else { millionths })
}

/// Writes a count of millionths as `-?D+.DDDDDD`.
fn fmt_millionths(f: &mut std::fmt::Formatter<'_>, millionths: i64) -> std::fmt::Result {
    let sign = if millionths < 0 { "-" } else { "" };
    let abs = millionths.unsigned_abs();
    write!(f, "{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

impl std::fmt::Display for Eur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_millionths(f, self.micros)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Eur {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^-?[0-9]+\.[0-9]{6}$"))
            .description(Some("Amount in EUR, decimal string with six decimals"))
            .examples(["0.001234"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Eur {}

impl Serialize for Eur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Eur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a decimal amount with at most six decimals"
            ))
        })
    }
}

/// An exact decimal quantity with six fractional digits: an integer count of millionths of its
/// unit, written in JSON as a string (`"12.345678"`). Certificates carry energy (Wh), emissions
/// (g CO2e) and intensities (g CO2e/kWh) in this form, so sums reconcile exactly and no reader
/// meets binary floating-point drift. The unit is in the field name (`energy_wh`, `emissions_g`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Decimal6(i64);

impl Decimal6 {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// From a count of millionths.
    #[must_use]
    pub const fn from_millionths(millionths: i64) -> Self {
        Self(millionths)
    }

    /// The count of millionths.
    #[must_use]
    pub const fn millionths(self) -> i64 {
        self.0
    }

    /// Rounds a float to the nearest millionth (half away from zero); `None` for NaN, infinities
    /// and magnitudes beyond ±9.2 × 10¹² (i64 millionths).
    #[must_use]
    pub fn from_f64(value: f64) -> Option<Self> {
        let scaled = (value * 1e6).round();
        // i64::MAX as f64 rounds up to 2^63, so compare strictly below it.
        (scaled.is_finite() && scaled.abs() < 9.2e18).then_some(Self(scaled as i64))
    }

    /// The value as a float (for display and float-typed database columns only).
    #[must_use]
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Parses `"-?D+(.D{1,6})?"`; `None` for anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        parse_millionths(text).map(Self)
    }

    /// The larger of `self` and zero.
    #[must_use]
    pub fn clamp_non_negative(self) -> Self {
        Self(self.0.max(0))
    }
}

impl Add for Decimal6 {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Decimal6 {
    fn add_assign(&mut self, rhs: Self) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

impl Sub for Decimal6 {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self(self.0.saturating_sub(rhs.0))
    }
}

impl std::iter::Sum for Decimal6 {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, |a, b| a + b)
    }
}

impl std::fmt::Display for Decimal6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_millionths(f, self.0)
    }
}

impl Serialize for Decimal6 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal6 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a decimal string with at most six decimals"
            ))
        })
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Decimal6 {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^-?[0-9]+\.[0-9]{6}$"))
            .description(Some(
                "Exact decimal with six decimals, as a string; the unit is in the field name",
            ))
            .examples(["12.345678"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Decimal6 {}

#[cfg(test)]
mod eur_tests {
    use super::Eur;

    #[test]
    fn eur_parses_and_prints_exactly() {
        assert_eq!(Eur::parse("25").map(Eur::micros), Some(25_000_000));
        assert_eq!(
            Eur::parse("0.000123").map(|e| e.to_string()),
            Some("0.000123".into())
        );
        assert_eq!(
            Eur::parse("-1.5").map(|e| e.to_string()),
            Some("-1.500000".into())
        );
        for bad in ["", ".5", "1.", "1.1234567", "1e3", "abc", "--1"] {
            assert_eq!(Eur::parse(bad), None, "{bad}");
        }
    }
}
