//! Extractors: what a handler needs of a request before it starts — the reader's
//! language, the signed-in staff member (and whether an admin), and a staff form whose
//! CSRF token matches the session's. Each refuses with a `WebError`, so a handler's
//! first line is its work.

use axum::extract::{Form, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::WebError;
use super::page::{cookie, language};
use super::AppState;
use crate::staff::{Role, StaffMember};
use kasip_core::{Lang, Text};

/// Cookie holding a staff session's token (256-bit random; stored hashed).
pub const SESSION_COOKIE: &str = "kasip_session";

#[derive(Deserialize)]
struct LangParam {
    lang: Option<String>,
}

fn lang_of(parts: &Parts) -> Lang {
    let chosen = Query::<LangParam>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|query| query.0.lang);
    language(chosen.as_deref(), &parts.headers)
}

/// The reader's language: `?lang=`, the `lang` cookie, then Accept-Language.
pub struct PageLang(pub Lang);

impl FromRequestParts<AppState> for PageLang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(lang_of(parts)))
    }
}

/// A page's query parameters, or a page in the reader's language saying the address is
/// incomplete (axum's own refusal is a line of English about deserialising).
pub struct PageQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for PageQuery<T> {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|query| Self(query.0))
            .map_err(|_| {
                WebError::refused(
                    lang_of(parts),
                    StatusCode::BAD_REQUEST,
                    Text::ErrorBadAddress,
                )
            })
    }
}

/// The address the request came from (what throttles count guesses by). Served with
/// connect info, every request has it; a router driven without (a unit test) is
/// "unspecified".
pub struct PeerAddress(pub std::net::IpAddr);

impl FromRequestParts<AppState> for PeerAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |info| info.0.ip());
        Ok(Self(peer))
    }
}

/// A signed-in staff member, the session's CSRF token and the reader's language; 401
/// when not signed in (actions and polls; pages use `StaffPage`).
pub struct Staff {
    pub member: StaffMember,
    pub csrf: String,
    pub lang: Lang,
}

impl Staff {
    pub fn is_admin(&self) -> bool {
        self.member.role == Role::Admin
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let Ok(check) = SessionCheck::from_request_parts(parts, state).await;
        let lang = check.lang;
        let not_signed_in = WebError::SignInFirst { lang };
        if check.token.is_none() {
            return Err(not_signed_in);
        }
        let session = state.with_db(move |store| check.session(store)).await;
        match session {
            Ok(Some((member, csrf))) => Ok(Self { member, csrf, lang }),
            Ok(None) => Err(not_signed_in),
            Err(error) => Err(WebError::failure(lang, &error)),
        }
    }
}

/// The staff session's cookie, checked later inside a handler's own trip to the
/// database (`member`): the projector's poll, once a second per projector, makes one
/// trip instead of two. Anything else takes `Staff`.
#[derive(Clone)]
pub struct SessionCheck {
    pub lang: Lang,
    token: Option<String>,
    now: i64,
    idle_secs: i64,
}

impl FromRequestParts<AppState> for SessionCheck {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            lang: lang_of(parts),
            token: cookie(&parts.headers, SESSION_COOKIE, state.secure_cookies),
            now: state.clock_high_water(),
            idle_secs: i64::from(state.settings.staff_idle_mins) * 60,
        })
    }
}

impl SessionCheck {
    /// The same cookie, judged at `now` (a projector's feed checks it again and again).
    pub fn at(&self, now: i64) -> Self {
        Self {
            now,
            ..self.clone()
        }
    }

    /// The signed-in staff member and the session's CSRF token; None when not signed in.
    pub fn session(
        &self,
        store: &crate::store::Store,
    ) -> Result<Option<(StaffMember, String)>, crate::error::AgentError> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        crate::staff::session(store.connection(), token, self.now, self.idle_secs)
            .map_err(crate::error::AgentError::Staff)
    }

    /// The signed-in staff member; None when not signed in.
    pub fn member(
        &self,
        store: &crate::store::Store,
    ) -> Result<Option<StaffMember>, crate::error::AgentError> {
        Ok(self.session(store)?.map(|(member, _)| member))
    }
}

/// `Staff` for a page: not signed in goes to the sign-in page instead of a 401.
pub struct StaffPage(pub Staff);

impl FromRequestParts<AppState> for StaffPage {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        match Staff::from_request_parts(parts, state).await {
            Ok(staff) => Ok(Self(staff)),
            Err(WebError::SignInFirst { .. }) => Err(WebError::ToLogin),
            Err(other) => Err(other),
        }
    }
}

/// A signed-in admin, for a page: not signed in goes to the sign-in page, any other
/// staff member gets 403.
pub struct Admin(pub Staff);

impl FromRequestParts<AppState> for Admin {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let StaffPage(staff) = StaffPage::from_request_parts(parts, state).await?;
        if !staff.is_admin() {
            return Err(WebError::refused(
                staff.lang,
                StatusCode::FORBIDDEN,
                Text::StaffNotYours,
            ));
        }
        Ok(Self(staff))
    }
}

/// A form posted by staff: it carries the session's CSRF token.
pub trait CsrfField {
    fn csrf(&self) -> &str;
}

/// A signed-in member's form whose CSRF token is the session's: 401 when not signed in,
/// 400 for a form that does not parse, 403 for a wrong or missing token.
pub struct StaffForm<T> {
    pub staff: Staff,
    pub form: T,
}

impl<T: DeserializeOwned + CsrfField + Send> FromRequest<AppState> for StaffForm<T> {
    type Rejection = WebError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, WebError> {
        let (mut parts, body) = request.into_parts();
        let staff = Staff::from_request_parts(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        let Form(form) = Form::<T>::from_request(request, state).await.map_err(|_| {
            WebError::refused(staff.lang, StatusCode::BAD_REQUEST, Text::ErrorBadForm)
        })?;
        if !crate::secrets::same_secret(staff.csrf.as_bytes(), form.csrf().as_bytes()) {
            return Err(WebError::refused(
                staff.lang,
                StatusCode::FORBIDDEN,
                Text::StaffCsrf,
            ));
        }
        Ok(Self { staff, form })
    }
}

/// A `StaffForm` posted by an admin; any other member gets 403 (after the CSRF check).
pub struct AdminForm<T>(pub StaffForm<T>);

impl<T: DeserializeOwned + CsrfField + Send> FromRequest<AppState> for AdminForm<T> {
    type Rejection = WebError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, WebError> {
        let form = StaffForm::<T>::from_request(request, state).await?;
        if !form.staff.is_admin() {
            return Err(WebError::refused(
                form.staff.lang,
                StatusCode::FORBIDDEN,
                Text::StaffNotYours,
            ));
        }
        Ok(Self(form))
    }
}

/// A form with only the CSRF token (sign out, open, close).
#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

impl CsrfField for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}
