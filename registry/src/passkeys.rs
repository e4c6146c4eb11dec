//! A student's passkey, enrolled at the registry and not at the college (design §5.10):
//! the registration ceremony behind `/passkey` (its page is in `pages`), and each
//! college's signed key directory for its own agent.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use kasip_core::wire::{PasskeyFinish, PasskeyStart, SignedPasskeyDirectory};
use kasip_core::Iin;
use serde_json::json;

use crate::state::{error, RegistryState};
use crate::store::PasskeyRefusal;

pub fn routes() -> Router<RegistryState> {
    Router::new()
        .route("/v1/passkeys/options", post(options))
        .route("/v1/passkeys", post(finish))
        .route("/v1/colleges/{bin}/passkeys", get(directory))
}

/// The relying party's RP ID, when this registry enrols passkeys.
fn rp_id(state: &RegistryState) -> Option<String> {
    state.relying_party.as_ref().map(|rp| rp.rp_id.clone())
}

fn no_passkeys() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "this registry enrols no passkeys (serve it with --agents-zone or --passkey-rp-id)",
    )
}

fn refused(refusal: PasskeyRefusal) -> Response<Body> {
    match refusal {
        PasskeyRefusal::WrongCode => error(
            StatusCode::FORBIDDEN,
            "this IIN and code do not match, or the code was used or has expired",
        ),
        PasskeyRefusal::Expired => error(
            StatusCode::BAD_REQUEST,
            "this registration is unknown or older than five minutes; start again",
        ),
        PasskeyRefusal::Invalid(reason) => error(StatusCode::BAD_REQUEST, &reason.to_string()),
    }
}

/// `POST /v1/passkeys/options` `{iin, code}`: the options for `credentials.create`.
/// Wrong codes are throttled per IIN, as wrong passwords are per login.
async fn options(State(state): State<RegistryState>, body: Bytes) -> Response<Body> {
    let Some(rp_id) = rp_id(&state) else {
        return no_passkeys();
    };
    let Ok(start) = serde_json::from_slice::<PasskeyStart>(&body) else {
        return error(StatusCode::BAD_REQUEST, "expected JSON {iin, code}");
    };
    let iin = match Iin::parse(start.iin.trim()) {
        Ok(iin) => iin,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &format!("iin: {reason}")),
    };
    let now = state.now();
    let throttle_key = format!("passkey:{iin}");
    let locked = state
        .sign_in_failures
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .locked_for(&throttle_key, now);
    if let Some(wait) = locked {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "too many wrong codes for this IIN; try again in {} min",
                wait / 60 + 1
            ),
        );
        if let Ok(value) = wait.max(1).to_string().parse() {
            response.headers_mut().insert("retry-after", value);
        }
        return response;
    }
    let started = state
        .try_with_store(move |store| store.start_passkey(&iin, &start.code, &rp_id, now))
        .await;
    let mut failures = state
        .sign_in_failures
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match started {
        Err(response) => response,
        Ok(Ok(options)) => {
            failures.succeeded(&throttle_key);
            Json(options).into_response()
        }
        Ok(Err(refusal)) => {
            failures.failed(&throttle_key, now);
            refused(refusal)
        }
    }
}

/// `POST /v1/passkeys` `{ceremony, client_data_json, attestation_object}`: enrols the
/// passkey (201) and revokes the student's earlier one.
async fn finish(State(state): State<RegistryState>, body: Bytes) -> Response<Body> {
    let Some(rp_id) = rp_id(&state) else {
        return no_passkeys();
    };
    let Ok(finished) = serde_json::from_slice::<PasskeyFinish>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {ceremony, client_data_json, attestation_object}",
        );
    };
    let (Ok(client_data), Ok(attestation)) = (
        URL_SAFE_NO_PAD.decode(&finished.client_data_json),
        URL_SAFE_NO_PAD.decode(&finished.attestation_object),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "client_data_json and attestation_object are base64url",
        );
    };
    let now = state.now();
    match state
        .try_with_store(move |store| {
            store.finish_passkey(&finished.ceremony, &client_data, &attestation, &rp_id, now)
        })
        .await
    {
        Err(response) => response,
        Ok(Ok((_, credential_id))) => (
            StatusCode::CREATED,
            Json(json!({ "credential_id": credential_id })),
        )
            .into_response(),
        Ok(Err(refusal)) => refused(refusal),
    }
}

/// `GET /v1/colleges/{bin}/passkeys`, signed by the college's own agent: the passkeys of
/// its listed students, signed by the registry.
async fn directory(
    State(state): State<RegistryState>,
    Path(bin): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let path = format!("/v1/colleges/{bin}/passkeys");
    let agent_bin = match crate::http::own_college(&state, &headers, path, &bin, "passkeys").await {
        Ok(bin) => bin,
        Err(response) => return response,
    };
    let Some(rp_id) = rp_id(&state) else {
        return no_passkeys();
    };
    let now = state.now();
    match state
        .try_with_store(move |store| store.signed_passkey_directory(&agent_bin, &rp_id, now))
        .await
    {
        Err(response) => response,
        Ok(jws) => Json(SignedPasskeyDirectory { directory: jws }).into_response(),
    }
}
