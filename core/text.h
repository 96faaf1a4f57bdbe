#pragma once

// Text that came from somewhere else (an agent, an app's output) made safe
// to log, store and print: no control characters (a newline cannot forge a
// log line, an escape sequence cannot reach an operator's terminal) and a
// bounded length.

#include <cstddef>
#include <string>

#include <google/protobuf/message.h>

#include "absl/strings/string_view.h"

namespace tern {

// `text` with \n, \r and \t as those two-character escapes, every other
// control character (C0, DEL, and the C1 range U+0080-U+009F) as \xNN or
// \u00NN, cut to at most `max_bytes` on a UTF-8 boundary with "..." added.
std::string printable(absl::string_view text, std::size_t max_bytes = 1024);

// Well-formed UTF-8: no overlong forms, no UTF-16 surrogates, nothing past
// U+10FFFF. NUL is a character like any other here.
bool is_utf8(absl::string_view s);

// printable() applied to every string field of `m`, nested messages and
// map values included (bytes fields are left alone); true when anything
// changed.
bool make_printable(google::protobuf::Message& m, std::size_t max_bytes = 1024);

}  // namespace tern
