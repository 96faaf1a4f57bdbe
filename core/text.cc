#include "core/text.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>

#include "absl/strings/str_format.h"

namespace tern {

std::string printable(absl::string_view text, std::size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + 8);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::string piece;
    std::size_t used = 1;
    if (c == '\n') {
      piece = "\\n";
    } else if (c == '\r') {
      piece = "\\r";
    } else if (c == '\t') {
      piece = "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      piece = absl::StrFormat("\\x%02x", c);
    } else if (c == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      // A C1 control (U+0080-U+009F), e.g. CSI: terminals act on it too.
      piece = absl::StrFormat("\\u%04x", static_cast<unsigned char>(text[i + 1]));
      used = 2;
    } else {
      // One whole, well-formed UTF-8 sequence, so a cut never splits a
      // character; anything else (a stray continuation byte, a sequence
      // cut short or carrying a control character) is escaped byte by byte.
      used = c < 0x80 ? 1 : c >= 0xf8 ? 0 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
      bool whole = used > 0 && i + used <= text.size();
      for (std::size_t k = 1; whole && k < used; ++k) {
        const auto cont = static_cast<unsigned char>(text[i + k]);
        whole = cont >= 0x80 && cont <= 0xbf;
      }
      if (whole) {
        piece = std::string(text.substr(i, used));
      } else {
        piece = absl::StrFormat("\\x%02x", c);
        used = 1;
      }
    }
    if (out.size() + piece.size() > max_bytes) {
      out += "...";
      return out;
    }
    out += piece;
    i += used - 1;
  }
  return out;
}

bool is_utf8(absl::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  const auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const auto cont = [&](std::size_t k) { return k < n && (at(k) & 0xC0) == 0x80; };
  while (i < n) {
    const unsigned char c = at(i);
    std::size_t len = 0;
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      // No overlong forms (E0 80-9F) and no UTF-16 surrogates (ED A0-BF).
      if (i + 1 >= n || (c == 0xE0 && at(i + 1) < 0xA0) || (c == 0xED && at(i + 1) > 0x9F)) return false;
      len = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      // No overlong forms (F0 80-8F) and nothing past U+10FFFF (F4 90-).
      if (i + 1 >= n || (c == 0xF0 && at(i + 1) < 0x90) || (c == 0xF4 && at(i + 1) > 0x8F)) return false;
      len = 4;
    } else {
      return false;
    }
    for (std::size_t k = 1; k < len; ++k) {
      if (!cont(i + k)) return false;
    }
    i += len;
  }
  return true;
}

bool make_printable(google::protobuf::Message& m, std::size_t max_bytes) {
  using google::protobuf::FieldDescriptor;
  bool changed = false;
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(m, f); ++j) changed |= make_printable(*r->MutableRepeatedMessage(&m, f, j), max_bytes);
      } else if (r->HasField(m, f)) {
        changed |= make_printable(*r->MutableMessage(&m, f), max_bytes);
      }
      continue;
    }
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_STRING || f->type() == FieldDescriptor::TYPE_BYTES) continue;
    if (f->is_repeated()) {
      for (int j = 0; j < r->FieldSize(m, f); ++j) {
        const std::string v = r->GetRepeatedString(m, f, j);
        std::string p = printable(v, max_bytes);
        if (p != v) {
          r->SetRepeatedString(&m, f, j, std::move(p));
          changed = true;
        }
      }
    } else {
      const std::string v = r->GetString(m, f);
      if (v.empty()) continue;
      std::string p = printable(v, max_bytes);
      if (p != v) {
        r->SetString(&m, f, std::move(p));
        changed = true;
      }
    }
  }
  return changed;
}

}  // namespace tern
