//! How the controller's errors reach a caller. Each error type that crosses
//! into the gRPC services becomes a [`Status`] here, once, so that a code
//! means the same wherever the error came from; a service returns it with
//! `?`.

use tonic::Status;

use crate::expand::ExpandError;
use crate::signin::SignInError;
use crate::store::StoreError;
use crate::store::leases::Fenced;

impl From<StoreError> for Status {
    /// A worker's call about an unknown task or under a stale lease, and a
    /// call its lease does not allow, are the caller's to hear (NOT_FOUND,
    /// FAILED_PRECONDITION, PERMISSION_DENIED); a stopping controller is
    /// UNAVAILABLE (try again); any other store failure is INTERNAL and
    /// logged.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Lease(Fenced::Unknown) => Status::not_found(error.to_string()),
            StoreError::Lease(Fenced::Stale) => Status::failed_precondition(error.to_string()),
            StoreError::Denied { message, .. } => Status::permission_denied(message),
            StoreError::Closed => Status::unavailable("the controller is stopping"),
            other => {
                tracing::error!(error = %other, "store failure");
                Status::internal(other.to_string())
            }
        }
    }
}

impl From<ExpandError> for Status {
    /// A target list that cannot be expanded: the request's fault
    /// (INVALID_ARGUMENT, naming the field), or AWS's answer to the
    /// controller (FAILED_PRECONDITION: the organization or its role).
    fn from(error: ExpandError) -> Self {
        match error {
            ExpandError::Invalid { .. } => crate::validate::invalid_argument(&[error.to_string()], "spec."),
            ExpandError::Aws(message) => Status::failed_precondition(message),
        }
    }
}

impl From<SignInError> for Status {
    /// A refused AWS sign-in is UNAUTHENTICATED; one STS could not be asked
    /// about is UNAVAILABLE (try again).
    fn from(error: SignInError) -> Self {
        match error {
            SignInError::Refused(why) => Status::unauthenticated(why),
            SignInError::Unavailable(why) => Status::unavailable(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn each_store_error_has_the_code_a_caller_acts_on() {
        let cases = [
            (
                StoreError::Lease(Fenced::Unknown),
                Code::NotFound,
                "task_id: no such task",
            ),
            (
                StoreError::Lease(Fenced::Stale),
                Code::FailedPrecondition,
                "lease_id: not the task's current lease",
            ),
            (
                StoreError::Denied {
                    rule: "lease_holder",
                    message: "lease_id: held by w1".into(),
                },
                Code::PermissionDenied,
                "lease_id: held by w1",
            ),
            (StoreError::Closed, Code::Unavailable, "the controller is stopping"),
            (StoreError::NoRows, Code::Internal, "store: no row"),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }

    #[test]
    fn expansion_and_sign_in_errors_keep_their_meaning() {
        let aws = Status::from(ExpandError::Aws("organizations: AccessDenied".into()));
        assert_eq!(aws.code(), Code::FailedPrecondition);
        let refused = Status::from(SignInError::Refused("AWS sign-in token: expired".into()));
        assert_eq!(
            (refused.code(), refused.message()),
            (Code::Unauthenticated, "AWS sign-in token: expired")
        );
        assert_eq!(
            Status::from(SignInError::Unavailable("sts: timeout".into())).code(),
            Code::Unavailable
        );
    }
}
