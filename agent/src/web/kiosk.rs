//! What kiosks call (design §5.3): enrolment with a one-time code, the list of pass keys,
//! and the upload of scans. JSON in and out; errors are `{"error": sentence}`.
//! Every call but enrolment carries `Authorization: Bearer <kiosk credential>`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kasip_core::wire::{
    KioskEnrolAnswer, KioskEnrolRequest, KioskPlace, PassKeyList, ScanAnswer, ScanAnswers,
};

use super::extract::PeerAddress;
use super::page::json_error;
use super::throttle::{self, throttled, Client, Key};
use super::AppState;
use crate::error::AgentError;
use crate::kiosks::{EnrolRefusal, Kiosk, KioskIdentity, Place};
use crate::marks::{KioskScan, ScanOutcome};

fn unavailable(error: &AgentError) -> Response {
    tracing::error!(error = %crate::error::report(error), "kiosk request failed");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent cannot read or write its database right now; the kiosk retries",
    )
}

/// The body as `T`, or the sentence for a 400.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|error| format!("expected {shape}: {error}"))
}

fn place_view(place: &Place) -> KioskPlace {
    let (room, site) = match place {
        Place::Room { room, site } => (room.clone(), site.clone()),
        Place::Entrance { site } => (String::new(), site.clone()),
    };
    KioskPlace {
        kind: place.kind().to_owned(),
        room,
        site,
        description: place.describe(),
    }
}

pub async fn enrol(
    State(state): State<AppState>,
    PeerAddress(peer): PeerAddress,
    body: axum::body::Bytes,
) -> Response {
    let now = state.now();
    // Per address: guesses slow their own client down, never an admin's real kiosk.
    let client_key = Key::client("kiosk-enrolment", &Client::address(peer));
    let wait = state
        .throttle
        .wait(&client_key, throttle::KIOSK_ENROLMENT, now);
    if wait > 0 {
        let answer = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many wrong enrolment codes from this address; wait {wait} s and type the code again"),
        );
        return throttled(answer, wait);
    }
    let request: KioskEnrolRequest = match parse_json(&body, "{\"code\": \"...\"}") {
        Ok(request) => request,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, message),
    };
    let outcome = state
        .with_db(move |store| {
            crate::kiosks::enrol(store.connection(), &request.code, now)
                .map_err(|source| AgentError::from(store.error(source)))
        })
        .await;
    match outcome {
        Ok(Ok((kiosk, credential))) => {
            state.throttle.success(&client_key);
            tracing::info!(kiosk = kiosk.id, place = %kiosk.place.describe(), "kiosk enrolled");
            Json(KioskEnrolAnswer {
                kiosk_id: kiosk.id,
                credential,
                place: place_view(&kiosk.place),
                pass_window_secs: i64::from(state.settings.pass_window_secs),
            })
            .into_response()
        }
        Ok(Err(refusal)) => {
            state.throttle.failure(&client_key, now);
            let status = match refusal {
                EnrolRefusal::UnknownCode => StatusCode::UNAUTHORIZED,
                EnrolRefusal::Expired | EnrolRefusal::AlreadyUsed => StatusCode::GONE,
            };
            json_error(status, refusal.message())
        }
        Err(error) => unavailable(&error),
    }
}

/// The kiosk behind the request's bearer credential, or the answer to send instead.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Kiosk, Response> {
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|credential| !credential.is_empty())
        .map(str::to_owned);
    let Some(credential) = credential else {
        return Err(json_error(
            StatusCode::UNAUTHORIZED,
            "no kiosk credential; enrol the kiosk with `kasip-kiosk enroll`",
        ));
    };
    let identity = state
        .with_db(move |store| {
            crate::kiosks::authenticate(store.connection(), &credential)
                .map_err(|source| AgentError::from(store.error(source)))
        })
        .await;
    match identity {
        Ok(KioskIdentity::Enrolled(kiosk)) => Ok(kiosk),
        Ok(KioskIdentity::Revoked(id)) => {
            tracing::warn!(kiosk = id, "a revoked kiosk called the agent");
            Err(json_error(
                StatusCode::UNAUTHORIZED,
                format!("kiosk {id} was revoked by the admin; enrol it again with a new code"),
            ))
        }
        Ok(KioskIdentity::Unknown) => Err(json_error(
            StatusCode::UNAUTHORIZED,
            "unknown kiosk credential; enrol the kiosk with `kasip-kiosk enroll`",
        )),
        Err(error) => Err(unavailable(&error)),
    }
}

pub async fn keys(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let kiosk = match authenticate(&state, &headers).await {
        Ok(kiosk) => kiosk,
        Err(response) => return response,
    };
    let holders = state
        .with_db(|store| {
            crate::kiosks::pass_keys(store.connection())
                .map_err(|source| AgentError::from(store.error(source)))
        })
        .await;
    match holders {
        Ok(holders) => Json(PassKeyList {
            kiosk_id: kiosk.id,
            generated_at: state.now(),
            pass_window_secs: i64::from(state.settings.pass_window_secs),
            students: holders,
        })
        .into_response(),
        Err(error) => unavailable(&error),
    }
}

pub async fn scans(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let kiosk = match authenticate(&state, &headers).await {
        Ok(kiosk) => kiosk,
        Err(response) => return response,
    };
    let uploaded = match crate::kiosks::parse_scan_upload(&body) {
        Ok(uploaded) => uploaded,
        Err(refusal) if refusal.too_large => {
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, refusal.message)
        }
        Err(refusal) => return json_error(StatusCode::BAD_REQUEST, refusal.message),
    };
    let scans = uploaded
        .into_iter()
        .map(|item| KioskScan {
            kiosk: kiosk.clone(),
            scan_id: item.id,
            pass: item.pass,
            scanned_at: item.scanned_at,
        })
        .collect::<Vec<_>>();
    let ids: Vec<String> = scans.iter().map(|scan| scan.scan_id.clone()).collect();
    let results = state.writer.kiosk_scans(scans).await;
    let mut answers = Vec::with_capacity(results.len());
    for (id, result) in ids.into_iter().zip(results) {
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(failure) => {
                tracing::error!(failure = %failure.0, "cannot store kiosk scans");
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the agent cannot store scans right now (disk full or busy); the kiosk keeps them and retries",
                );
            }
        };
        let mut answer = ScanAnswer {
            id,
            outcome: outcome.code().to_owned(),
            reason: None,
            student: None,
            event_id: None,
            lesson_id: None,
            repeated: None,
        };
        match outcome {
            ScanOutcome::Marked {
                student,
                event_id,
                lesson_id,
                repeated,
            } => {
                answer.student = Some(student);
                answer.event_id = Some(event_id);
                answer.lesson_id = Some(lesson_id);
                answer.repeated = Some(repeated);
            }
            ScanOutcome::Presence { student } | ScanOutcome::NoLesson { student } => {
                answer.student = Some(student);
            }
            ScanOutcome::Refused(refusal) => answer.reason = Some(refusal.code().to_owned()),
        }
        answers.push(answer);
    }
    Json(ScanAnswers { results: answers }).into_response()
}

#[cfg(test)]
mod tests {
    use crate::kiosks::{parse_scan_upload, MAX_SCANS_PER_UPLOAD, MAX_SCAN_ID_CHARS};

    #[test]
    fn a_full_upload_of_the_longest_scans_fits_the_body_limit() {
        // As long as a pass the kiosk forwards can be.
        let pass = "A".repeat(kasip_core::pass::MAX_PASS_CHARS);
        let scans: Vec<serde_json::Value> = (0..MAX_SCANS_PER_UPLOAD)
            .map(|_| {
                serde_json::json!({
                    "id": "i".repeat(MAX_SCAN_ID_CHARS),
                    "pass": pass,
                    "scanned_at": 9_999_999_999_i64,
                })
            })
            .collect();
        let body = serde_json::json!({ "scans": scans }).to_string();
        assert!(
            body.len() <= crate::web::MAX_BODY_BYTES,
            "{} scans take {} bytes, over the {}-byte body limit",
            MAX_SCANS_PER_UPLOAD,
            body.len(),
            crate::web::MAX_BODY_BYTES
        );
        assert_eq!(
            parse_scan_upload(body.as_bytes()).map(|scans| scans.len()),
            Ok(MAX_SCANS_PER_UPLOAD)
        );
    }
}
