// Turns the bridge's status into a TensorFlow Status. The code was chosen on the Rust side
// (Error::tf_code), the one place where error kinds meet TF codes.
#ifndef RDE_STATUS_H_
#define RDE_STATUS_H_

#include <string>

#include "redis-embedding/src/ffi.rs.h"
#include "tensorflow/core/platform/status.h"

namespace rde_tf {

inline tensorflow::Status ToStatus(const rde::Status& s) {
  if (s.code == 0) return tensorflow::OkStatus();
  return tensorflow::Status(static_cast<absl::StatusCode>(s.code),
                            std::string(s.message.data(), s.message.size()));
}

}  // namespace rde_tf

#endif  // RDE_STATUS_H_
