//! Error answers as the real server's `Status` bodies.

use super::ResourceType;
use serde_json::{json, Value};

/// An error answer: becomes a `Status` body with the HTTP code.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl Failure {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    /// An error with the reason the real server uses for the code.
    pub fn from_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        Self::new(code, reason, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    fn object(rt: &ResourceType, name: &str, code: u16, reason: &str, message: String) -> Self {
        let mut f = Self::new(code, reason, message);
        f.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        f
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let msg = format!("{} {name:?} not found", rt.qualified());
        Self::object(rt, name, 404, "NotFound", msg)
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let msg = format!("{} {name:?} already exists", rt.qualified());
        Self::object(rt, name, 409, "AlreadyExists", msg)
    }

    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
            rt.qualified()
        );
        Self::object(rt, name, 409, "Conflict", msg)
    }

    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn with_causes(mut self, causes: Vec<Value>) -> Self {
        self.details = Some(json!({"causes": causes}));
        self
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}
