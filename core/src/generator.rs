//! Random secret values for automatic secrets.
//!
//! Characters are drawn from the OS CSPRNG by rejection sampling: a random byte is used only if it
//! falls below the largest multiple of the charset size that fits in a byte, so every character is
//! exactly equally likely (no modulo bias).

use std::fmt;
use std::str::FromStr;

use crate::secret::{RngError, SecretBytes, fill_random};

pub const MIN_LENGTH: u32 = 16;
pub const MAX_LENGTH: u32 = 4096;
pub const DEFAULT_LENGTH: u32 = 32;

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX: &[u8] = b"0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Charset {
    #[default]
    Alphanumeric,
    Base64Url,
    Hex,
    /// The 94 visible ASCII characters `!`..=`~` (no space, so values survive trimming).
    AsciiPrintable,
}

impl Charset {
    pub const NAMES: [&'static str; 4] = ["alphanumeric", "base64url", "hex", "ascii-printable"];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Alphanumeric => "alphanumeric",
            Self::Base64Url => "base64url",
            Self::Hex => "hex",
            Self::AsciiPrintable => "ascii-printable",
        }
    }

    pub fn alphabet(&self) -> Vec<u8> {
        match self {
            Self::Alphanumeric => ALPHANUMERIC.to_vec(),
            Self::Base64Url => BASE64URL.to_vec(),
            Self::Hex => HEX.to_vec(),
            Self::AsciiPrintable => (b'!'..=b'~').collect(),
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeneratorError {
    #[error("unknown charset {0:?}; expected one of alphanumeric, base64url, hex, ascii-printable")]
    UnknownCharset(String),
    #[error("length {0} is out of range; it must be between {MIN_LENGTH} and {MAX_LENGTH}")]
    Length(u32),
    #[error(transparent)]
    Rng(#[from] RngErrorWrapper),
}

/// `RngError` is not `Clone`/`PartialEq`; this wrapper lets `GeneratorError` be both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to read from the operating system's random number generator")]
pub struct RngErrorWrapper;

impl From<RngError> for GeneratorError {
    fn from(_: RngError) -> Self {
        Self::Rng(RngErrorWrapper)
    }
}

impl FromStr for Charset {
    type Err = GeneratorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alphanumeric" => Ok(Self::Alphanumeric),
            "base64url" => Ok(Self::Base64Url),
            "hex" => Ok(Self::Hex),
            "ascii-printable" => Ok(Self::AsciiPrintable),
            other => Err(GeneratorError::UnknownCharset(other.to_owned())),
        }
    }
}

/// Validated generator settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorSpec {
    length: u32,
    charset: Charset,
}

impl GeneratorSpec {
    pub fn new(length: u32, charset: Charset) -> Result<Self, GeneratorError> {
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
            return Err(GeneratorError::Length(length));
        }
        Ok(Self { length, charset })
    }

    pub fn length(&self) -> u32 {
        self.length
    }

    pub fn charset(&self) -> Charset {
        self.charset
    }

    pub fn generate(&self) -> Result<SecretBytes, GeneratorError> {
        Ok(generate_from(&self.charset.alphabet(), self.length as usize, &mut |buf| fill_random(buf))?)
    }
}

impl Default for GeneratorSpec {
    fn default() -> Self {
        Self { length: DEFAULT_LENGTH, charset: Charset::Alphanumeric }
    }
}

/// Rejection sampling over `alphabet` (at most 256 symbols), with an injectable byte source.
fn generate_from(
    alphabet: &[u8],
    length: usize,
    fill: &mut dyn FnMut(&mut [u8]) -> Result<(), RngError>,
) -> Result<SecretBytes, RngError> {
    let n = alphabet.len();
    // Bytes >= limit are discarded; limit is the largest multiple of n that is <= 256.
    let limit = 256 - (256 % n);
    let mut out = Vec::with_capacity(length);
    let mut pool = zeroize::Zeroizing::new([0u8; 256]);
    while out.len() < length {
        fill(pool.as_mut())?;
        for &b in pool.iter() {
            if (b as usize) < limit {
                out.push(alphabet[b as usize % n]);
                if out.len() == length {
                    break;
                }
            }
        }
    }
    Ok(SecretBytes::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Charset; 4] =
        [Charset::Alphanumeric, Charset::Base64Url, Charset::Hex, Charset::AsciiPrintable];

    #[test]
    fn length_bounds() {
        assert_eq!(GeneratorSpec::new(15, Charset::Hex), Err(GeneratorError::Length(15)));
        assert_eq!(GeneratorSpec::new(4097, Charset::Hex), Err(GeneratorError::Length(4097)));
        assert_eq!(GeneratorSpec::new(16, Charset::Hex).unwrap().generate().unwrap().len(), 16);
        assert_eq!(GeneratorSpec::new(4096, Charset::Hex).unwrap().generate().unwrap().len(), 4096);
    }

    #[test]
    fn charset_names_round_trip() {
        for c in ALL {
            assert_eq!(c.as_str().parse::<Charset>().unwrap(), c);
        }
        assert!("Alphanumeric".parse::<Charset>().is_err());
        assert_eq!(Charset::AsciiPrintable.alphabet().len(), 94);
        assert_eq!(Charset::Base64Url.alphabet().len(), 64);
    }

    #[test]
    fn rejection_sampling_discards_biased_bytes() {
        // With 62 symbols, bytes 248..=255 must be discarded, not folded onto 'A'..'H'.
        let mut calls = 0;
        let mut fill = |buf: &mut [u8]| {
            calls += 1;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = if calls == 1 { 248 + (i % 8) as u8 } else { 61 };
            }
            Ok(())
        };
        let v = generate_from(ALPHANUMERIC, 4, &mut fill).unwrap();
        assert_eq!(v.expose(), b"9999");
    }

    /// Wilson–Hilferty approximation of the chi-squared critical value for `df` degrees of
    /// freedom at the normal quantile `z`.
    fn chi2_critical(df: f64, z: f64) -> f64 {
        let a = 2.0 / (9.0 * df);
        df * (1.0 - a + z * a.sqrt()).powi(3)
    }

    fn chi2(charset: Charset, samples: usize) -> (f64, f64) {
        let alphabet = charset.alphabet();
        let mut counts = vec![0u64; 256];
        let spec = GeneratorSpec::new(MAX_LENGTH, charset).unwrap();
        let mut drawn = 0;
        while drawn < samples {
            for &b in spec.generate().unwrap().expose() {
                counts[b as usize] += 1;
            }
            drawn += MAX_LENGTH as usize;
        }
        let expected = drawn as f64 / alphabet.len() as f64;
        let stat = alphabet.iter().map(|&c| (counts[c as usize] as f64 - expected).powi(2) / expected).sum();
        // z = 4.75: a false alarm about once in a million runs.
        (stat, chi2_critical((alphabet.len() - 1) as f64, 4.75))
    }

    #[test]
    fn chi_squared_uniformity_for_every_charset() {
        for c in ALL {
            let (stat, critical) = chi2(c, 400_000);
            assert!(stat < critical, "{c}: chi2 {stat:.1} >= {critical:.1}");
        }
    }

    #[test]
    fn chi_squared_test_detects_modulo_bias() {
        // The same statistic applied to a deliberately biased generator must fail, or the
        // uniformity test above proves nothing.
        let mut counts = [0u64; 62];
        let mut buf = [0u8; 4096];
        let mut drawn = 0u64;
        while drawn < 400_000 {
            fill_random(&mut buf).unwrap();
            for &b in &buf {
                counts[b as usize % 62] += 1;
            }
            drawn += buf.len() as u64;
        }
        let expected = drawn as f64 / 62.0;
        let stat: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
        assert!(stat > chi2_critical(61.0, 4.75), "biased stat {stat:.1}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_character_belongs_to_the_charset(len in MIN_LENGTH..=512u32, which in 0usize..4) {
            let charset = ALL[which];
            let v = GeneratorSpec::new(len, charset).unwrap().generate().unwrap();
            prop_assert_eq!(v.len(), len as usize);
            let alphabet = charset.alphabet();
            prop_assert!(v.expose().iter().all(|b| alphabet.contains(b)));
        }
    }
}
