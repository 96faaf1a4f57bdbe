#pragma once

#include <cstddef>
#include <string>

namespace tern {

// An HTTP answer's body collected up to `limit` bytes, for libcurl's
// CURLOPT_WRITEFUNCTION (append_bounded) and CURLOPT_WRITEDATA (the
// BoundedBody): past the limit the transfer is aborted and `too_big` says
// why. No libcurl types here, so callers that link libcurl share it.
struct BoundedBody {
  explicit BoundedBody(std::size_t max_bytes) : limit(max_bytes) {}
  std::string text;
  std::size_t limit;
  bool too_big = false;
};

inline std::size_t append_bounded(char* data, std::size_t size, std::size_t n, void* user) {
  auto* body = static_cast<BoundedBody*>(user);
  const std::size_t bytes = size * n;
  if (body->text.size() + bytes > body->limit) {
    body->too_big = true;
    return 0;  // aborts the transfer
  }
  body->text.append(data, bytes);
  return bytes;
}

}  // namespace tern
