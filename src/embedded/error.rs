//! Errors of the embedded upstream, worded and coded as Qdrant words and codes them.

use qdrant_edge::OperationError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 404 / NOT_FOUND
    #[error("Not found: {0}")]
    NotFound(String),
    /// 400 / INVALID_ARGUMENT
    #[error("Wrong input: {0}")]
    BadInput(String),
    /// 400 / INVALID_ARGUMENT, for a request that does not parse or validate:
    /// Qdrant words these without the `Wrong input` prefix.
    #[error("{0}")]
    BadRequest(String),
    /// 409 / ALREADY_EXISTS
    #[error("Wrong input: {0}")]
    AlreadyExists(String),
    /// 401 / UNAUTHENTICATED
    #[error("{0}")]
    Unauthenticated(String),
    /// 403 / PERMISSION_DENIED
    #[error("{0}")]
    PermissionDenied(String),
    /// 501 / UNIMPLEMENTED: outside the subset the embedded upstream serves.
    #[error("{0} is not supported by cutover's embedded upstream")]
    Unimplemented(String),
    /// 500 / INTERNAL
    #[error("Service internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn collection_not_found(name: &str) -> Self {
        ApiError::NotFound(format!("Collection `{name}` doesn't exist!"))
    }

    pub fn http_status(&self) -> u16 {
        match self {
            ApiError::NotFound(_) => 404,
            ApiError::BadInput(_) | ApiError::BadRequest(_) => 400,
            ApiError::AlreadyExists(_) => 409,
            ApiError::Unauthenticated(_) => 401,
            ApiError::PermissionDenied(_) => 403,
            ApiError::Unimplemented(_) => 501,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::NotFound(_) => tonic::Code::NotFound,
            ApiError::BadInput(_) | ApiError::BadRequest(_) => tonic::Code::InvalidArgument,
            ApiError::AlreadyExists(_) => tonic::Code::AlreadyExists,
            ApiError::Unauthenticated(_) => tonic::Code::Unauthenticated,
            ApiError::PermissionDenied(_) => tonic::Code::PermissionDenied,
            ApiError::Unimplemented(_) => tonic::Code::Unimplemented,
            ApiError::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        tonic::Status::new(err.grpc_code(), err.to_string())
    }
}

impl From<OperationError> for ApiError {
    fn from(err: OperationError) -> Self {
        match err {
            OperationError::PointIdError { missed_point_id } => {
                ApiError::NotFound(format!("No point with id {missed_point_id} found"))
            }
            OperationError::ServiceError { description, .. } => ApiError::Internal(description),
            OperationError::InconsistentStorage { .. }
            | OperationError::OutOfMemory { .. }
            | OperationError::Cancelled { .. }
            | OperationError::Timeout { .. } => ApiError::Internal(err.to_string()),
            OperationError::WrongVectorDimension { .. }
            | OperationError::VectorNameNotExists { .. }
            | OperationError::TypeError { .. }
            | OperationError::TypeInferenceError { .. }
            | OperationError::ValidationError { .. }
            | OperationError::WrongSparse
            | OperationError::WrongMulti
            | OperationError::MissingRangeIndexForOrderBy { .. }
            | OperationError::MissingMapIndexForFacet { .. }
            | OperationError::VariableTypeError { .. }
            | OperationError::NonFiniteNumber { .. } => ApiError::BadInput(err.to_string()),
        }
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(err: serde_json::Error) -> Self {
        ApiError::BadRequest(format!("Format error in JSON body: {err}"))
    }
}
