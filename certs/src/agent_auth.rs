//! How the agent proves who it is on requests that carry no batch (checkpoint,
//! beneficiaries): `Authorization: KasipAgent <JWS>` over `{agent, method, path, iat}`,
//! signed with the agent's key. The registry checks the signature under the enrolled
//! key, that method and path are this request's, that `iat` is within `MAX_SKEW_SECS` of
//! its clock, and that the random `jti` was not used before (`Verified::jti`: the registry
//! remembers it), so a captured header cannot be replayed.

use crate::jws::{protected_header, sign_compact, verify_compact};
use crate::DeviceKey;
use kasip_core::to_canonical_json;
use serde_json::json;

pub const SCHEME: &str = "KasipAgent";
pub const MAX_SKEW_SECS: i64 = 300;

/// The system's random generator failed: no authorization can be made.
#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomUnavailable;

/// A fresh single-use id for a signed request (128 random bits, base64url): the
/// registry takes each once.
pub fn fresh_jti() -> Result<String, RandomUnavailable> {
    use ring::rand::SecureRandom;
    let mut jti = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut jti)
        .map_err(|_| RandomUnavailable)?;
    Ok(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jti,
    ))
}

/// The header value for `method path` at `now`, with a fresh `jti`.
pub fn authorization(
    key: &DeviceKey,
    method: &str,
    path: &str,
    now: i64,
) -> Result<String, RandomUnavailable> {
    let jti = fresh_jti()?;
    let claims =
        json!({"agent": key.thumbprint(), "method": method, "path": path, "iat": now, "jti": jti});
    // Only strings and integers: canonical form cannot fail.
    let payload = to_canonical_json(&claims).unwrap_or_default();
    Ok(format!(
        "{SCHEME} {}",
        sign_compact(key, &protected_header(key), payload.as_bytes())
    ))
}

/// A genuine, fresh authorization: its agent, and the `jti` the verifier must not
/// accept again (for `MAX_SKEW_SECS` either side of `iat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub agent: String,
    pub jti: String,
    pub iat: i64,
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
) -> Result<Verified, String> {
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
    let jti = claims["jti"]
        .as_str()
        .filter(|jti| (16..=64).contains(&jti.len()))
        .ok_or("claims carry no jti (a kasip-agent older than the registry: update it)")?;
    Ok(Verified {
        agent: agent.to_owned(),
        jti: jti.to_owned(),
        iat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fresh_header_for_this_request_under_this_key_passes() {
        let key = DeviceKey::from_seed(&[7; 32]).expect("key");
        let other = DeviceKey::from_seed(&[8; 32]).expect("key");
        let header = authorization(&key, "GET", "/v1/x", 1000).expect("header");
        assert_eq!(claimed_agent(&header), Some(key.thumbprint()));
        let verified = verify(&header, key.public_key(), "GET", "/v1/x", 1100).expect("valid");
        assert_eq!((verified.agent, verified.iat), (key.thumbprint(), 1000));
        let again = authorization(&key, "GET", "/v1/x", 1000).expect("header");
        let second = verify(&again, key.public_key(), "GET", "/v1/x", 1000).expect("valid");
        assert_ne!(verified.jti, second.jti, "each header is unique");
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
