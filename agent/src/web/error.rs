//! The one error type of the web edge: every refusal and failure becomes a page in the
//! reader's language here, so handlers return `Result<Response, WebError>` and use `?`.

use std::fmt::Display;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::page::render;
use crate::marks::WriteFailure;
use kasip_core::{Lang, Text};

/// One paragraph of a message page.
pub struct Paragraph {
    /// `ok`, `bad` or empty.
    pub class: &'static str,
    /// A stable id tests and scripts find the paragraph by.
    pub id: Option<&'static str>,
    /// The machine-readable reason of a refusal.
    pub data_reason: Option<String>,
    pub text: String,
}

impl Paragraph {
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            class: "",
            id: None,
            data_reason: None,
            text: text.into(),
        }
    }

    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            class: "ok",
            ..Self::plain(text)
        }
    }

    pub fn bad(text: impl Into<String>) -> Self {
        Self {
            class: "bad",
            ..Self::plain(text)
        }
    }

    pub fn id(self, id: &'static str) -> Self {
        Self {
            id: Some(id),
            ..self
        }
    }

    pub fn reason(self, reason: impl Into<String>) -> Self {
        Self {
            data_reason: Some(reason.into()),
            ..self
        }
    }
}

/// A link under a message.
pub struct Link {
    pub href: String,
    pub text: String,
}

impl Link {
    pub fn new(href: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            href: href.into(),
            text: text.into(),
        }
    }
}

/// A short page: a title, a few paragraphs, a few links. Confirmations and refusals.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub lang: Lang,
    pub title: Text,
    pub paragraphs: Vec<Paragraph>,
    pub links: Vec<Link>,
}

impl MessagePage {
    pub fn new(lang: Lang, title: Text, paragraphs: Vec<Paragraph>) -> Self {
        Self {
            lang,
            title,
            paragraphs,
            links: Vec::new(),
        }
    }

    pub fn link(mut self, href: impl Into<String>, text: impl Into<String>) -> Self {
        self.links.push(Link::new(href, text));
        self
    }

    pub fn respond(&self, status: StatusCode) -> Response {
        render(status, self)
    }
}

/// Why a request got no page of its own.
pub enum WebError {
    /// `status` and the catalog sentence `key`.
    Refused {
        lang: Lang,
        status: StatusCode,
        key: Text,
    },
    /// `status` and a page built for this refusal.
    Page {
        status: StatusCode,
        page: MessagePage,
    },
    /// Not signed in, for an action: 401 with a link to the sign-in page.
    SignInFirst { lang: Lang },
    /// Not signed in, for a page: go and sign in.
    ToLogin,
    /// Not the reader's fault (the database, a task): 503, the detail only in the log.
    Failure { lang: Lang, detail: String },
    /// The disk is full or read-only: 503 saying so (IT must act; mark the student later).
    StorageUnavailable { lang: Lang, detail: String },
}

impl WebError {
    pub fn refused(lang: Lang, status: StatusCode, key: Text) -> Self {
        Self::Refused { lang, status, key }
    }

    pub fn page(status: StatusCode, page: MessagePage) -> Self {
        Self::Page { status, page }
    }

    /// A refusal whose sentence is a domain error's own (already in words a user acts on).
    pub fn refused_because(lang: Lang, status: StatusCode, because: impl Display) -> Self {
        Self::page(
            status,
            MessagePage::new(
                lang,
                Text::ErrorTitle,
                vec![Paragraph::bad(because.to_string()).id("refusal")],
            ),
        )
    }

    pub fn failure(lang: Lang, error: &(dyn std::error::Error + 'static)) -> Self {
        Self::Failure {
            lang,
            detail: crate::error::report(error),
        }
    }

    /// The mark writer's failure: a full or read-only disk says so plainly, anything
    /// else asks to retry.
    pub fn write_failure(lang: Lang, failure: &WriteFailure) -> Self {
        if failure.is_storage_unavailable() {
            Self::StorageUnavailable {
                lang,
                detail: failure.0.clone(),
            }
        } else {
            Self::Failure {
                lang,
                detail: failure.0.clone(),
            }
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            Self::Refused { lang, status, key } => {
                MessagePage::new(lang, Text::ErrorTitle, vec![Paragraph::bad(lang.text(key))])
                    .respond(status)
            }
            Self::Page { status, page } => page.respond(status),
            Self::SignInFirst { lang } => MessagePage::new(
                lang,
                Text::ErrorTitle,
                vec![Paragraph::bad(lang.text(Text::StaffSignInFirst))],
            )
            .link("/login", lang.text(Text::LoginTitle))
            .respond(StatusCode::UNAUTHORIZED),
            Self::ToLogin => Redirect::to("/login").into_response(),
            Self::Failure { lang, detail } => {
                tracing::error!(detail, "request failed");
                Self::refused(
                    lang,
                    StatusCode::SERVICE_UNAVAILABLE,
                    Text::ErrorUnavailable,
                )
                .into_response()
            }
            Self::StorageUnavailable { lang, detail } => {
                tracing::error!(detail, "refusing marks: the disk is full or read-only");
                MessagePage::new(
                    lang,
                    Text::ErrorTitle,
                    vec![Paragraph::bad(lang.text(Text::ErrorStorageUnavailable))
                        .id("reason")
                        .reason("storage_unavailable")],
                )
                .respond(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }
}

/// `?` for failures that are not the reader's: `result.or_failure(lang)?`.
pub trait OrFailure<T> {
    fn or_failure(self, lang: Lang) -> Result<T, WebError>;
}

impl<T, E: std::error::Error + 'static> OrFailure<T> for Result<T, E> {
    fn or_failure(self, lang: Lang) -> Result<T, WebError> {
        self.map_err(|error| WebError::failure(lang, &error))
    }
}

#[cfg(test)]
mod tests {
    use super::super::page::hostile;
    use super::*;

    #[test]
    fn message_pages_escape_what_they_are_given() {
        let page = MessagePage::new(
            Lang::fallback(),
            Text::ErrorTitle,
            vec![Paragraph::bad(hostile::TEXT)
                .id("refusal")
                .reason(hostile::TEXT)],
        )
        .link(hostile::TEXT, hostile::TEXT);
        hostile::assert_escaped(&page.render().expect("message"));
    }
}
