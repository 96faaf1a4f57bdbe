#pragma once

// Config files rendered per slot from templates shipped in the release (the
// spec's `templates:`), for apps that read their port from a file of their
// own (nginx, HAProxy, a Java app) rather than from argv.
//
// Two layers, so the text rules are tested without a disk:
//
//   render_template()   a pure function: template text plus the slot's
//                       placeholders to text, or an error naming the line.
//   render_slot_files() reads each template from the release and writes the
//                       rendered file into the slot's render dir.
//
// The text rules: "{name}" and "{name:arg}" (name: lower-case letters and
// '_'; arg: up to 128 characters, no braces or newline) are placeholders and
// must be known; "{{" is a literal "{". Any other "{" is copied as it is, so
// config syntax ("server {", "\d{3}", "${HOME}") needs no escaping; a
// lower-case word in braces that is not a placeholder ("${user}") is an error
// and is written "{{user}" (giving "{user}").
//
// The disk rules (the agent runs as root; the release and the spec are
// hostile until checked):
//   - A source must be a regular file that resolves inside the release dir
//     (realpath), so a symlink in the release cannot point it at
//     /etc/shadow; it is opened with O_NOFOLLOW and read up to
//     kMaxTemplateBytes.
//   - Dests are created below the render dir through directory fds opened
//     with O_NOFOLLOW, never through a symlink.
//   - The render dir is made afresh for every render (what an earlier spec
//     rendered does not linger), owned by the agent with the slot user's
//     group, mode 0750: the slot can read it but not add to it. Each file is
//     written to a temp file (O_EXCL), given its mode and the slot user as
//     owner, synced, then renamed into place.
//
// Thread-safe: no shared state.

#include <sys/types.h>

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "tern/v1/service.pb.h"

namespace tern {

// The placeholders of one slot, by name without braces: "port" -> "9002",
// "port:admin" -> "9102", "release_dir", "render_dir", "version", "slot",
// "service". The same set for argv, env, working_dir and templates.
using Placeholders = std::map<std::string, std::string>;

// The largest template a release may ship.
inline constexpr std::size_t kMaxTemplateBytes = std::size_t{1} << 20;

// Renders `text` under the rules above. INVALID_ARGUMENT
// "<origin> line 3: unknown placeholder {prot}; ..." naming the known ones.
absl::StatusOr<std::string> render_template(std::string_view text, const Placeholders& values,
                                            std::string_view origin);

// Who owns the rendered files: the slot's user and group.
struct RenderOwner {
  uid_t uid = 0;
  gid_t gid = 0;
};

// Renders every template of `templates` from `release_dir` into
// `render_dir`, which is removed and made afresh (its parent is created when
// missing). No templates: nothing is touched (a render dir an earlier spec
// left stays until the next render). The error names the template (index, source and dest), what went
// wrong and what to do; on error the render dir may hold some of the files.
absl::Status render_slot_files(const google::protobuf::RepeatedPtrField<tern::v1::TemplateFile>& templates,
                               const Placeholders& values, const std::string& release_dir,
                               const std::string& render_dir, const RenderOwner& owner);

}  // namespace tern
