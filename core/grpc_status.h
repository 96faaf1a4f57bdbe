#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace tern {

// absl and gRPC share the canonical code numbering.
inline grpc::Status to_grpc(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

inline absl::Status from_grpc(const grpc::Status& st) {
  if (st.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
}

}  // namespace tern
