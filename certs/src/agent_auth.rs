//! How the agent proves who it is on requests that carry no batch (checkpoint,
//! beneficiaries): `Authorization: KasipAgent <JWS>` over `{agent, method, path, iat}`,
//! signed with the agent's key. The registry checks the signature under the enrolled
//! key, that method and path are this request's, and that `iat` is within
//! `MAX_SKEW_SECS` of its clock.

use crate::jws::{protected_header, sign_compact, verify_compact};
use crate::DeviceKey;
use kasip_core::to_canonical_json;
use serde_json::json;

pub const SCHEME: &str = "KasipAgent";
pub const MAX_SKEW_SECS: i64 = 300;

/// The header value for `method path` at `now`.
pub fn authorization(key: &DeviceKey, method: &str, path: &str, now: i64) -> String {
    let claims = json!({"agent": key.thumbprint(), "method": method, "path": path, "iat": now});
    // Only strings and integers: canonical form cannot fail.
    let payload = to_canonical_json(&claims).unwrap_or_default();
    format!(
        "{SCHEME} {}",
        sign_compact(key, &protected_header(key), payload.as_bytes())
    )
}

/// The `kid` an authorization header claims, before any check (to look up the key).
pub fn claimed_agent(header: &str) -> Option<String> {
    jws_kid(header.strip_prefix(SCHEME)?.trim())
}

/// The `kid` of a compact JWS's protected header, unverified (to find the key).
pub fn jws_kid(jws: &str) -> Option<String> {
    let header_part = jws.split('.').next()?;
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        header_part,
    )
    .ok()?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}

/// Checks `header` for `method path` at `now` under `public_key`.
pub fn verify(
    header: &str,
    public_key: &[u8],
    method: &str,
    path: &str,
    now: i64,
) -> Result<String, String> {
    let jws = header
        .strip_prefix(SCHEME)
        .ok_or("authorization scheme is not KasipAgent")?
        .trim();
    let verified = verify_compact(jws, public_key).map_err(|error| error.to_string())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&verified.payload).map_err(|_| "claims are not JSON")?;
    let agent = claims["agent"].as_str().ok_or("claims carry no agent")?;
    if claims["method"] != method || claims["path"] != path {
        return Err("the authorization was made for another request".into());
    }
    let iat = claims["iat"].as_i64().ok_or("claims carry no iat")?;
    if (now - iat).abs() > MAX_SKEW_SECS {
        return Err(format!(
            "the authorization is {}s from the registry's clock (at most {MAX_SKEW_SECS}s); check the agent's clock",
            now - iat
        ));
    }
    Ok(agent.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fresh_header_for_this_request_under_this_key_passes() {
        let key = DeviceKey::from_seed(&[7; 32]).expect("key");
        let other = DeviceKey::from_seed(&[8; 32]).expect("key");
        let header = authorization(&key, "GET", "/v1/x", 1000);
        assert_eq!(claimed_agent(&header), Some(key.thumbprint()));
        assert_eq!(
            verify(&header, key.public_key(), "GET", "/v1/x", 1100),
            Ok(key.thumbprint())
        );
        assert!(verify(&header, other.public_key(), "GET", "/v1/x", 1000).is_err());
        assert!(verify(&header, key.public_key(), "GET", "/v1/y", 1000).is_err());
        assert!(verify(&header, key.public_key(), "POST", "/v1/x", 1000).is_err());
        assert!(
            verify(&header, key.public_key(), "GET", "/v1/x", 1000 + 301)
                .expect_err("stale")
                .contains("clock")
        );
        assert!(verify("Bearer x", key.public_key(), "GET", "/v1/x", 1000).is_err());
        assert!(verify("KasipAgent a.b", key.public_key(), "GET", "/v1/x", 1000).is_err());
        assert_eq!(claimed_agent("KasipAgent !!!.x.y"), None);
    }
}
