//! The wire format of signing in with an AWS identity, shared by the CLI
//! (which signs) and the controller (which verifies): a bearer token
//! `muster-aws-v1.<base64url of a presigned sts:GetCallerIdentity URL>`
//! whose signature covers the `x-muster-server-id` header.

/// What an AWS sign-in token starts with.
pub const TOKEN_PREFIX: &str = "muster-aws-v1.";
/// The signed header that binds a token to one controller.
pub const SERVER_ID_HEADER: &str = "x-muster-server-id";
