//! Opaque pagination cursors: `base64url("<kind>:<key>")`. Clients must not build them; the kind
//! prefix stops a cursor of one listing being replayed against another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::AppError;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
const MAX_CURSOR_LEN: usize = 512;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1..=1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<u32, AppError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(l) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
            Some(_) => Err(AppError::bad_request(format!("limit: must be between 1 and {MAX_LIMIT}"))),
        }
    }
}

pub fn encode(kind: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

pub fn decode(kind: &str, cursor: &str) -> Result<String, AppError> {
    let invalid = || AppError::bad_request("cursor: is not a cursor returned by this listing");
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let key = text.strip_prefix(kind).and_then(|r| r.strip_prefix(':')).ok_or_else(invalid)?;
    Ok(key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let c = encode("secrets", "a/b");
        assert_eq!(decode("secrets", &c).unwrap(), "a/b");
        assert!(decode("audit", &c).is_err());
        assert!(decode("secrets", "!!!").is_err());
        assert!(decode("secrets", &"A".repeat(600)).is_err());
        assert_eq!(PageQuery { limit: None, cursor: None }.limit().unwrap(), 100);
        assert!(PageQuery { limit: Some(0), cursor: None }.limit().is_err());
        assert!(PageQuery { limit: Some(1001), cursor: None }.limit().is_err());
    }
}
