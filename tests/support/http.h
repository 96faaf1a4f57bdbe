#pragma once

#include <string>

namespace tern::testing {

// GET over plain HTTP/1.1 from "ip:port"; the raw response (status line,
// headers, body), empty on failure.
std::string http_get(const std::string& host_port, const std::string& path);

}  // namespace tern::testing
