//! The embedded upstream's API key, checked as Qdrant checks it: in the
//! `api-key` header or as `authorization: Bearer <key>`.

use std::sync::Arc;

use hyper::header::{AUTHORIZATION, HeaderMap};

use super::error::ApiError;

#[derive(Clone, Default)]
pub struct ApiKey(Option<Arc<str>>);

impl ApiKey {
    pub fn new(key: Option<String>) -> Self {
        ApiKey(key.map(Into::into))
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.0 else {
            return Ok(());
        };
        let given = headers
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        match given {
            None => Err(ApiError::Unauthenticated(
                "Must provide an API key or an Authorization bearer token".into(),
            )),
            Some(given) if given == &**key => Ok(()),
            Some(_) => Err(ApiError::PermissionDenied("Invalid API key or JWT".into())),
        }
    }
}
