//! Shared vocabulary of waygate: the [`Cause`] of every gateway-generated
//! response, the [`Side`] that produced a response, request ids and the
//! [`GatewayError`] that carries a cause from where it is first seen to the
//! edge. No I/O lives here.

mod cause;
mod docs;
mod error;
mod request_id;

pub use cause::{Cause, Side};
pub use docs::causes_markdown;
pub use error::GatewayError;
pub use request_id::{RequestId, RequestIdGenerator, MAX_REQUEST_ID_LEN};
