//! The reference registry's HTTP API (design §5.4) and its fault injection.
//!
//! Served by a hand-rolled hyper loop instead of `axum::serve` for one reason: to drop a
//! connection *after* storing a batch (the "stored, but the answer was lost" case), the
//! connection's service must be able to fail, which `axum::serve` does not allow.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kasip_core::wire::{
    BeneficiaryList, Checkpoint, EnrolmentAnswer, EnrolmentRequest, ErrorAnswer, ListedStudent,
    ReceiptAnswer,
};
use ring::rand::SecureRandom;
use serde_json::json;
use tower::ServiceExt;

use crate::state::{error, internal, RegistryState};
use crate::store::{Enrolment, Verdict};

/// Faults to inject, for tests and demos.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Share of batch uploads answered 503 (with Retry-After: 1) before any work.
    pub fail_rate: f64,
    /// Added to every request.
    pub latency: Duration,
    /// Share of requests whose connection is closed after the work, without an answer.
    pub drop_rate: f64,
    /// Answers trickle out a few bytes at a time over about this long.
    pub slow_body: Option<Duration>,
}

/// How long an upload waits for a slot before a 503 tells its agent to retry.
const BATCH_SLOT_WAIT: Duration = Duration::from_secs(60);

pub fn router(state: RegistryState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/colleges", get(overview_json))
        .route("/v1/enrolments", post(enrol))
        .route("/v1/batches", post(receive_batch))
        .route("/v1/heartbeats", post(heartbeat))
        .route("/v1/names", post(update_name))
        .route("/v1/agents/{kid}/checkpoint", get(checkpoint))
        .route("/v1/colleges/{bin}/beneficiaries", get(beneficiaries))
        .route("/v1/colleges/{bin}/policy", get(policy))
        .route("/v1/colleges/{bin}/findings", get(findings))
        .merge(crate::pages::routes())
        .merge(crate::passkeys::routes())
        .layer(axum::extract::DefaultBodyLimit::max(
            kasip_certs::jws::MAX_JWS_BYTES,
        ))
        .with_state(state)
}

/// `POST /v1/enrolments`: `{code, college_bin, public_key (base64url)}` → (code, BIN,
/// key bytes), or the sentence for a 400. The key and BIN are judged by `enrol`.
pub fn parse_enrolment(body: &[u8]) -> Result<(String, String, Vec<u8>), &'static str> {
    const SHAPE: &str = "expected {code, college_bin, public_key (base64url)}";
    let request: EnrolmentRequest = serde_json::from_slice(body).map_err(|_| SHAPE)?;
    let public_key = URL_SAFE_NO_PAD
        .decode(&request.public_key)
        .map_err(|_| SHAPE)?;
    Ok((request.code, request.college_bin, public_key))
}

async fn enrol(State(state): State<RegistryState>, body: Bytes) -> Response<Body> {
    let (code, bin, public_key) = match parse_enrolment(&body) {
        Ok(parsed) => parsed,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let now = state.now();
    let zone = state.zone.as_ref().map(|zone| zone.config().domain());
    let answer = state
        .with_store(move |store| {
            let verdict = store.enrol(&code, &bin, &public_key, now)?;
            let hostname = match (&verdict, zone) {
                (Enrolment::Enrolled(_) | Enrolment::AlreadyEnrolled(_), Some(zone)) => {
                    Some(format!("{}.{zone}", store.name_label(&bin)?))
                }
                _ => None,
            };
            Ok::<_, crate::store::RegistryError>((
                verdict,
                store.registry_key().public_key_base64url(),
                (bin, hostname),
            ))
        })
        .await;
    match answer {
        Err(response) => response,
        Ok(Err(failure)) => internal(failure),
        Ok(Ok((Enrolment::Refused(reason), _, _))) => error(StatusCode::FORBIDDEN, &reason),
        Ok(Ok((Enrolment::KeyTaken(reason), _, _))) => {
            tracing::warn!(%reason, "enrolment of an enrolled key refused");
            error(StatusCode::CONFLICT, &reason)
        }
        Ok(Ok((Enrolment::Enrolled(kid), registry_key, (bin, hostname)))) => {
            tracing::info!(%kid, %bin, ?hostname, "agent enrolled");
            enrolled(StatusCode::CREATED, kid, bin, registry_key, hostname)
        }
        Ok(Ok((Enrolment::AlreadyEnrolled(kid), registry_key, (bin, hostname)))) => {
            enrolled(StatusCode::OK, kid, bin, registry_key, hostname)
        }
    }
}

fn enrolled(
    status: StatusCode,
    agent: String,
    college_bin: String,
    registry_key: String,
    hostname: Option<String>,
) -> Response<Body> {
    (
        status,
        Json(EnrolmentAnswer {
            agent,
            college_bin,
            registry_key,
            hostname,
        }),
    )
        .into_response()
}

/// `POST /v1/names`: a signed `NameUpdate` (compact JWS) from the name's own agent; the
/// zone serves the change before the answer leaves.
async fn update_name(State(state): State<RegistryState>, body: Bytes) -> Response<Body> {
    let Some(zone) = state.zone.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "this registry serves no agents' zone (kasip-registry serve --agents-zone)",
        );
    };
    let jws = match small_jws(&body, "a name update") {
        Ok(jws) => jws,
        Err(response) => return *response,
    };
    let now = state.now();
    let domain = zone.config().domain();
    let answer = state
        .with_store(move |store| {
            let verdict = store.update_name(jws.trim(), &domain, now)?;
            let entries = match verdict {
                Ok(_) => Some(store.zone_entries()?),
                Err(_) => None,
            };
            Ok::<_, crate::store::RegistryError>((verdict, entries))
        })
        .await;
    use crate::store::NameRefusal;
    match answer {
        Err(response) => response,
        Ok(Err(failure)) => internal(failure),
        Ok(Ok((Ok(records), entries))) => {
            let entries = entries.unwrap_or_default();
            zone.refresh(&entries);
            if let Some(updates) = &state.zone_updates {
                let label = records.hostname.split('.').next().unwrap_or_default();
                if let Some(entry) = entries.iter().find(|entry| entry.label == label) {
                    // The agent proves the name right after this answer: the operator's
                    // server must hold the change first, or the agent hears 503 and retries.
                    if let Err(reason) = updates.publish(entry, now).await {
                        tracing::error!(%reason, "the operator's DNS server did not take the update");
                        return error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &format!("the name was stored but not published: {reason}"),
                        );
                    }
                }
            }
            tracing::info!(hostname = %records.hostname, addresses = ?records.addresses, challenges = records.acme_challenge.len(), "name updated");
            Json(records).into_response()
        }
        Ok(Ok((Err(NameRefusal::Unauthenticated(reason)), _))) => {
            tracing::warn!(%reason, "name update refused");
            error(StatusCode::UNAUTHORIZED, &reason)
        }
        Ok(Ok((Err(NameRefusal::NotYours(reason)), _))) => {
            tracing::warn!(%reason, "name update for another college's name refused");
            error(StatusCode::FORBIDDEN, &reason)
        }
        Ok(Ok((Err(NameRefusal::Invalid(reason)), _))) => error(StatusCode::BAD_REQUEST, &reason),
    }
}

async fn receive_batch(
    State(state): State<RegistryState>,
    request: Request<Body>,
) -> Response<Body> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "a batch is at most {} bytes ({} records)",
                kasip_certs::jws::MAX_JWS_BYTES,
                kasip_core::batch::MAX_RECORDS_PER_BATCH
            ),
        )
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > kasip_certs::jws::MAX_JWS_BYTES) {
        return too_large();
    }
    let slot = tokio::time::timeout(
        BATCH_SLOT_WAIT,
        Arc::clone(&state.batch_slots).acquire_owned(),
    )
    .await;
    let Ok(Ok(_slot)) = slot else {
        let mut busy = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the registry is busy with other batches; try again shortly",
        );
        busy.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        return busy;
    };
    let body =
        match axum::body::to_bytes(request.into_body(), kasip_certs::jws::MAX_JWS_BYTES).await {
            Ok(body) => body,
            Err(_) => return too_large(),
        };
    // The body's own bytes become the string: no second copy of up to 32 MiB.
    let Ok(jws) = String::from_utf8(Vec::from(body)) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    let now = state.now();
    let verdict = state
        .with_store(move |store| {
            let verdict = store.receive(jws.trim(), now);
            drop(jws);
            crate::memory::give_back();
            verdict
        })
        .await;
    match verdict {
        Err(response) => response,
        Ok(Err(failure)) => internal(failure),
        Ok(Ok(Verdict::Stored(receipt))) => {
            (StatusCode::CREATED, Json(ReceiptAnswer { receipt })).into_response()
        }
        Ok(Ok(Verdict::AlreadyStored(receipt))) => {
            (StatusCode::OK, Json(ReceiptAnswer { receipt })).into_response()
        }
        Ok(Ok(Verdict::Conflict {
            expected_seq,
            message,
        })) => {
            tracing::warn!(%message, expected_seq, "batch conflict");
            (
                StatusCode::CONFLICT,
                Json(ErrorAnswer {
                    error: message,
                    expected_seq: Some(expected_seq),
                }),
            )
                .into_response()
        }
        Ok(Ok(Verdict::Bad(message))) => {
            tracing::warn!(%message, "batch refused");
            error(StatusCode::BAD_REQUEST, &message)
        }
        Ok(Ok(Verdict::UnknownAgent(message))) => error(StatusCode::UNAUTHORIZED, &message),
        Ok(Ok(Verdict::KeyTaken(message))) => {
            tracing::warn!(%message, "key rotation refused");
            error(StatusCode::CONFLICT, &message)
        }
    }
}

/// The body of a small signed request (a heartbeat, a name update): at most 16 KiB of
/// UTF-8, or the refusal naming `what`.
fn small_jws(body: &Bytes, what: &str) -> Result<String, Box<Response<Body>>> {
    if body.len() > 16 * 1024 {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("{what} is at most 16 KiB"),
        )));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| Box::new(error(StatusCode::BAD_REQUEST, "the body is not UTF-8")))
}

/// A heartbeat: the agent's chain head, pinned. Answered with the registry's clock.
async fn heartbeat(State(state): State<RegistryState>, body: Bytes) -> Response<Body> {
    let jws = match small_jws(&body, "a heartbeat") {
        Ok(jws) => jws,
        Err(response) => return *response,
    };
    let now = state.now();
    match state
        .with_store(move |store| store.heartbeat(jws.trim(), now))
        .await
    {
        Err(response) => response,
        Ok(Err(failure)) => internal(failure),
        Ok(Ok(Err(reason))) => error(StatusCode::BAD_REQUEST, &reason),
        Ok(Ok(Ok(()))) => {
            Json(kasip_core::wire::HeartbeatAnswer { registry_time: now }).into_response()
        }
    }
}

/// Checks `Authorization: KasipAgent …` for this request; returns the agent's college.
async fn authenticated(
    state: &RegistryState,
    headers: &HeaderMap,
    path: String,
) -> Result<(String, String), Response<Body>> {
    let header = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Some(kid) = kasip_certs::agent_auth::claimed_agent(&header) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "a KasipAgent authorization is required",
        ));
    };
    let lookup = kid.clone();
    let agent = state.with_store(move |store| store.agent(&lookup)).await?;
    let Some(signer) = agent.map_err(internal)? else {
        return Err(error(StatusCode::UNAUTHORIZED, "unknown agent"));
    };
    let now = state.now();
    let verified = kasip_certs::agent_auth::verify(&header, &signer.public_key, "GET", &path, now)
        .map_err(|reason| error(StatusCode::UNAUTHORIZED, &reason))?;
    let agent = signer.agent_id.clone();
    let fresh = state
        .with_store(move |store| store.use_authorization(&agent, &verified.jti, verified.iat, now))
        .await?
        .map_err(internal)?;
    if !fresh {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "this authorization was already used: each signed request is single-use",
        ));
    }
    Ok((signer.agent_id, signer.bin))
}

/// A signed read of `/v1/colleges/{bin}/…`: only the college's own agent may make it.
pub(crate) async fn own_college(
    state: &RegistryState,
    headers: &HeaderMap,
    path: String,
    bin: &str,
    what: &str,
) -> Result<String, Response<Body>> {
    let (_, agent_bin) = authenticated(state, headers, path).await?;
    if agent_bin != bin {
        return Err(error(
            StatusCode::FORBIDDEN,
            &format!("an agent reads only its own college's {what}"),
        ));
    }
    Ok(agent_bin)
}

async fn checkpoint(
    State(state): State<RegistryState>,
    Path(kid): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let path = format!("/v1/agents/{kid}/checkpoint");
    let (agent, _) = match authenticated(&state, &headers, path).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if agent != kid {
        return error(
            StatusCode::FORBIDDEN,
            "an agent reads only its own checkpoint",
        );
    }
    match state
        .with_store(move |store| store.checkpoint(&agent))
        .await
    {
        Err(response) => response,
        Ok(Err(failure)) => internal(failure),
        Ok(Ok((last_seq, last_hash))) => Json(Checkpoint {
            last_seq,
            last_hash,
        })
        .into_response(),
    }
}

async fn beneficiaries(
    State(state): State<RegistryState>,
    Path(bin): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let path = format!("/v1/colleges/{bin}/beneficiaries");
    let agent_bin = match own_college(&state, &headers, path, &bin, "list").await {
        Ok(bin) => bin,
        Err(response) => return response,
    };
    let listed = state
        .with_store(move |store| store.beneficiaries(&agent_bin))
        .await;
    match listed {
        Err(response) => response,
        Ok(Err(failure)) => internal(failure),
        Ok(Ok(students)) => Json(BeneficiaryList {
            college_bin: bin,
            students: students
                .into_iter()
                .map(|(iin, beneficiary, voucher)| ListedStudent {
                    iin,
                    beneficiary,
                    voucher,
                })
                .collect(),
        })
        .into_response(),
    }
}

/// The national policy for the agent's own college, signed by the registry.
async fn policy(
    State(state): State<RegistryState>,
    Path(bin): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let path = format!("/v1/colleges/{bin}/policy");
    let agent_bin = match own_college(&state, &headers, path, &bin, "policy").await {
        Ok(bin) => bin,
        Err(response) => return response,
    };
    let now = state.now();
    match state
        .with_store(move |store| store.signed_policy(&agent_bin, now))
        .await
    {
        Err(response) => response,
        Ok(Err(failure)) => internal(failure),
        Ok(Ok(jws)) => Json(kasip_core::wire::SignedPolicy { policy: jws }).into_response(),
    }
}

/// What the registry noticed about a college's evidence: for the college's own agent
/// (a signed read), or a signed-in registrar or auditor.
async fn findings(
    State(state): State<RegistryState>,
    Path(bin): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let agent_bin = if crate::pages::signed_in(&state, &headers).await.is_some() {
        bin
    } else {
        let path = format!("/v1/colleges/{bin}/findings");
        match own_college(&state, &headers, path, &bin, "findings").await {
            Ok(bin) => bin,
            Err(response) => return response,
        }
    };
    match state
        .try_with_store(move |store| store.findings(Some(&agent_bin), None))
        .await
    {
        Ok(findings) => Json(json!({ "findings": findings })).into_response(),
        Err(response) => response,
    }
}

/// Every college's figures: for registrars and auditors only.
async fn overview_json(State(state): State<RegistryState>, headers: HeaderMap) -> Response<Body> {
    if let Err(response) = crate::pages::require_api(&state, &headers).await {
        return response;
    }
    match state.try_with_store(|store| store.overview()).await {
        Ok(colleges) => Json(json!({ "colleges": colleges })).into_response(),
        Err(response) => response,
    }
}

/// A uniform draw in [0, 1).
fn chance() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// An answer whose body trickles out in 16 pieces over about `over`.
async fn trickled(response: Response<Body>, over: Duration) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let piece = bytes.len().div_ceil(16).max(1);
    let pause = over / 16;
    let stream = futures_util::stream::unfold(bytes, move |rest| async move {
        if rest.is_empty() {
            return None;
        }
        tokio::time::sleep(pause).await;
        let mut rest = rest;
        let head = rest.split_to(piece.min(rest.len()));
        Some((Ok::<_, Infallible>(head), rest))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Serves `state` on `listener` until `shutdown` resolves.
/// 200 "ok" with the database's engine when a query answers; 503 otherwise, so that a
/// balancer stops sending to a registry whose database is gone.
async fn healthz(State(state): State<RegistryState>) -> Response<Body> {
    match state.with_store(|store| store.check_database()).await {
        Ok(Ok(engine)) => format!("ok\ndatabase: {engine}\n").into_response(),
        Ok(Err(failure)) => {
            tracing::error!(error = %failure, "health check: the database does not answer");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database does not answer",
            )
        }
        Err(busy) => busy,
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: RegistryState,
    faults: Faults,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        // Small answers go out at once (Nagle and delayed ACKs cost ~40 ms a request).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move { handle(app, request, faults).await }
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(error) => {
                        tracing::debug!(%error, %peer, "TLS handshake failed");
                        return;
                    }
                },
                None => builder.serve_connection(TokioIo::new(tcp), service).await,
            };
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "connection ended");
            }
        });
    }
}

/// The error that makes hyper close a connection without answering.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    app: Router,
    request: Request<hyper::body::Incoming>,
    faults: Faults,
) -> Result<Response<Body>, Dropped> {
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let is_upload = request.uri().path() == "/v1/batches";
    if is_upload && faults.fail_rate > 0.0 && chance() < faults.fail_rate {
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "injected failure");
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return Ok(response);
    }
    let response = match app.oneshot(request.map(Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // After the work: a batch may be stored while its answer is lost.
    if faults.drop_rate > 0.0 && chance() < faults.drop_rate {
        return Err(Dropped);
    }
    Ok(match faults.slow_body {
        Some(over) => trickled(response, over).await,
        None => response,
    })
}
