//! One function that says what an AWS error means for muster: slow down,
//! try again, or stop. Everything that retries asks it.

use std::time::Duration;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use rand::Rng as _;

/// What to do about an AWS error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The API is rate limited for this key: slow that key down and retry.
    Throttled,
    /// A passing fault (5xx, timeout, dropped connection): retry with backoff.
    Transient,
    /// The credentials may not do this (or the role could not be assumed):
    /// another attempt will not help.
    AccessDenied,
    /// The session expired: refresh credentials, then retry.
    ExpiredCredentials,
    /// Anything else: the request itself is wrong.
    Final,
}

impl ErrorClass {
    /// Whether another attempt can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient | Self::ExpiredCredentials)
    }
}

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "EC2ThrottledException",
    "LimitExceededException",
    "PriorRequestNotComplete",
];

const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthFailure",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
];

const EXPIRED_CODES: &[&str] = &["ExpiredToken", "ExpiredTokenException", "RequestExpired"];

const TRANSIENT_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Classifies an AWS error code (and HTTP status, when known).
pub fn classify_code(code: Option<&str>, http_status: Option<u16>) -> ErrorClass {
    match code {
        Some(code) if THROTTLING_CODES.contains(&code) => ErrorClass::Throttled,
        Some(code) if EXPIRED_CODES.contains(&code) => ErrorClass::ExpiredCredentials,
        Some(code) if ACCESS_DENIED_CODES.contains(&code) => ErrorClass::AccessDenied,
        Some(code) if TRANSIENT_CODES.contains(&code) => ErrorClass::Transient,
        _ => match http_status {
            Some(429) => ErrorClass::Throttled,
            Some(status) if status >= 500 => ErrorClass::Transient,
            _ => ErrorClass::Final,
        },
    }
}

/// Classifies an SDK error.
pub fn classify<E, R>(error: &SdkError<E, R>) -> ErrorClass
where
    E: ProvideErrorMetadata,
    R: HttpStatus,
{
    match error {
        SdkError::ConstructionFailure(_) => ErrorClass::Final,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => ErrorClass::Transient,
        SdkError::ResponseError(response) => classify_code(None, Some(response.raw().status_code())).max_transient(),
        SdkError::ServiceError(service) => classify_code(service.err().code(), Some(service.raw().status_code())),
        _ => ErrorClass::Transient,
    }
}

impl ErrorClass {
    /// A response that could not be read is a passing fault unless its status
    /// says otherwise.
    fn max_transient(self) -> Self {
        if self == Self::Final { Self::Transient } else { self }
    }
}

/// The HTTP status of a raw response, whatever its type.
pub trait HttpStatus {
    /// The status code.
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The error code and message of an SDK error, in one line, without the
/// request or any credential.
pub fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error,
{
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => err.to_string(),
            }
        }
        SdkError::TimeoutError(_) => "request timed out".to_owned(),
        SdkError::DispatchFailure(failure) => {
            if failure.is_io() {
                "connection failed (i/o error)".to_owned()
            } else if failure.is_timeout() {
                "connection timed out".to_owned()
            } else {
                "request could not be sent".to_owned()
            }
        }
        SdkError::ResponseError(_) => "response could not be read".to_owned(),
        SdkError::ConstructionFailure(_) => "request could not be built".to_owned(),
        _ => "unknown error".to_owned(),
    }
}

/// Exponential backoff with full jitter: attempt 1 waits up to `base`, each
/// further attempt doubles that, up to `cap`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let ceiling = exp.min(cap);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified_as_aws_means_them() {
        assert_eq!(
            classify_code(Some("ThrottlingException"), Some(400)),
            ErrorClass::Throttled
        );
        assert_eq!(
            classify_code(Some("RequestLimitExceeded"), Some(503)),
            ErrorClass::Throttled
        );
        assert_eq!(classify_code(Some("AccessDenied"), Some(403)), ErrorClass::AccessDenied);
        assert_eq!(
            classify_code(Some("ExpiredToken"), Some(400)),
            ErrorClass::ExpiredCredentials
        );
        assert_eq!(
            classify_code(Some("InternalServerError"), Some(500)),
            ErrorClass::Transient
        );
        assert_eq!(classify_code(None, Some(502)), ErrorClass::Transient);
        assert_eq!(classify_code(Some("InvalidInstanceId"), Some(400)), ErrorClass::Final);
        assert!(!ErrorClass::AccessDenied.is_retryable());
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for attempt in 1..40 {
            let wait = backoff(attempt, base, cap);
            assert!(wait <= cap);
            assert!(wait >= Duration::from_millis(1));
        }
        assert!(backoff(1, base, cap) <= base);
    }
}
