//! The service token: what a caller of an internal endpoint (a peer service, the harness)
//! shows, as `Authorization: Bearer <token>`.
//!
//! Internal endpoints are the ones only other services and operators call: trip-service's
//! candidates, match commits and export, user-service's profile lookup, matching-service's
//! stats. A service configured with a token answers a request to one of them without the right
//! token with 401 and a JSON error; the comparison takes the same time wherever the tokens
//! differ. A service without a token configured leaves them open (and says so at start): the
//! development setup. Kubernetes generates the token into a Secret (`k8s/make-secret.sh`), the
//! local target makes one per run, the simulation uses a fixed one.

use crate::http::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// A shared secret between the services. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceToken(Arc<str>);

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceToken(<redacted>)")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing left after trimming.
    #[error("the service token is empty")]
    Empty,
    /// Too short to be a secret.
    #[error("the service token has {0} characters; at least 16 are needed")]
    TooShort(usize),
    /// Not a visible ASCII string (it travels in a header).
    #[error("the service token may only hold visible ASCII characters")]
    NotVisibleAscii,
}

impl ServiceToken {
    /// Fewest characters a token may have.
    pub const MIN_LEN: usize = 16;

    /// A token from its text (surrounding whitespace, such as a file's final newline, dropped).
    pub fn new(text: &str) -> Result<ServiceToken, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotVisibleAscii);
        }
        if text.len() < Self::MIN_LEN {
            return Err(TokenError::TooShort(text.len()));
        }
        Ok(ServiceToken(text.into()))
    }

    /// A fresh random token (128 bits from the OS; seeded under simulation).
    pub fn random() -> ServiceToken {
        ServiceToken(format!("{}{}", crate::clock::new_id(), crate::clock::new_id()).into())
    }

    /// The token's text, to hand to a process that must present it (never to a log).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header value that presents this token.
    pub fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0)).expect("visible ASCII");
        value.set_sensitive(true);
        value
    }

    /// Whether `presented` is this token, in time that depends only on the lengths.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }

    /// Whether a request's `Authorization` header presents this token.
    pub fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let presented = authorization.and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        // Compare even when nothing was presented, so absence and a wrong token look alike.
        let ok = self.matches(presented.unwrap_or(b""));
        ok && presented.is_some()
    }
}

/// Equality of two byte strings whose running time does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for (i, x) in a.iter().enumerate() {
        // Walk all of `a` whatever `b` is, so the time depends on the expected length only.
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Middleware for internal routes: with a token, a request without it gets 401; without one,
/// everything passes. Mount with `axum::middleware::from_fn_with_state(token, require)` as a
/// `route_layer`, so unknown paths still get the JSON 404.
pub async fn require(State(token): State<Option<ServiceToken>>, request: Request, next: Next) -> Response {
    match &token {
        Some(token) if !token.admits(request.headers().get(header::AUTHORIZATION)) => {
            tracing::debug!(path = ?request.uri().path(), "refused a call to an internal endpoint without the service token");
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint is internal: send the service token as Authorization: Bearer <token>",
            )
            .into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_admitted() {
        let token = ServiceToken::new("0123456789abcdef-token\n").unwrap();
        let header = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(token.admits(Some(&header("Bearer 0123456789abcdef-token"))));
        for wrong in [
            "Bearer 0123456789abcdef-tokeN",
            "Bearer 0123456789abcdef-token ",
            "Bearer 0123456789abcdef-toke",
            "Bearer 0123456789abcdef-token-and-more",
            "Basic 0123456789abcdef-token",
            "0123456789abcdef-token",
            "Bearer ",
            "",
        ] {
            assert!(!token.admits(Some(&header(wrong))), "{wrong:?} was admitted");
        }
        assert!(!token.admits(None));
        assert!(constant_time_eq(b"", b"") && !constant_time_eq(b"a", b"") && !constant_time_eq(b"", b"a"));
    }

    #[test]
    fn a_weak_or_unprintable_token_is_refused_and_a_token_never_prints() {
        assert_eq!(ServiceToken::new(" \n"), Err(TokenError::Empty));
        assert_eq!(ServiceToken::new("short"), Err(TokenError::TooShort(5)));
        assert_eq!(ServiceToken::new("0123456789 abcdef"), Err(TokenError::NotVisibleAscii));
        assert_eq!(ServiceToken::new("0123456789abcdéf"), Err(TokenError::NotVisibleAscii));
        let token = ServiceToken::new("0123456789abcdef").unwrap();
        assert!(!format!("{token:?}").contains("0123"));
        assert!(token.header_value().is_sensitive());
    }
}
