#include "agent/slot_templates.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/unique_fd.h"
#include "core/service_spec.h"

namespace tern {
namespace {

constexpr std::size_t kMaxPlaceholderArg = 128;

bool name_char(char c) { return (c >= 'a' && c <= 'z') || c == '_'; }

// The placeholder-shaped token at text[pos] ('{'): its length up to and
// including '}', or 0 when the '{' starts no token.
std::size_t token_length(std::string_view text, std::size_t pos) {
  std::size_t i = pos + 1;
  while (i < text.size() && name_char(text[i])) ++i;
  if (i == pos + 1 || i >= text.size()) return 0;
  if (text[i] == '}') return i + 1 - pos;
  if (text[i] != ':') return 0;
  const std::size_t arg = ++i;
  while (i < text.size() && i - arg <= kMaxPlaceholderArg && text[i] != '}' && text[i] != '{' && text[i] != '\n') ++i;
  if (i >= text.size() || text[i] != '}' || i == arg || i - arg > kMaxPlaceholderArg) return 0;
  return i + 1 - pos;
}

std::string errno_text(int err) { return std::strerror(err); }

// Where a template went wrong, for every message.
std::string what(int index, const tern::v1::TemplateFile& t) {
  return absl::StrCat("templates[", index, "] (", t.source(), " -> ", t.dest(), ")");
}

// Reads the template `source` of the release whose dir resolves to `root`.
absl::StatusOr<std::string> read_source(const std::string& root, const std::string& source) {
  const std::string path = absl::StrCat(root, "/", source);
  std::unique_ptr<char, decltype(&::free)> resolved(::realpath(path.c_str(), nullptr), &::free);
  if (!resolved) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::FailedPreconditionError("the release has no such file; ship it in the release or fix the "
                                           "spec's source");
    }
    return absl::FailedPreconditionError(absl::StrCat("cannot resolve ", path, ": ", errno_text(err)));
  }
  const std::string real = resolved.get();
  if (real.size() <= root.size() || real.compare(0, root.size(), root) != 0 || real[root.size()] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "it resolves to ", real, ", outside the release (through a symlink); a template must be a file of the "
        "release itself"));
  }
  // O_NOFOLLOW: the path was just resolved; anything that is a symlink now
  // was swapped in since and is not followed. O_NONBLOCK: a fifo does not
  // hang the agent (fstat refuses it next).
  unique_fd fd(::open(real.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) return absl::FailedPreconditionError(absl::StrCat("cannot open ", real, ": ", errno_text(errno)));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot stat ", real, ": ", errno_text(errno)));
  }
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError("it is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > kMaxTemplateBytes) {
    return absl::InvalidArgumentError(absl::StrCat("it is ", st.st_size, " bytes; a template is at most ",
                                                      kMaxTemplateBytes, " bytes (split it, or ship the large part "
                                                      "as a plain file the rendered one includes)"));
  }
  std::string text;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::FailedPreconditionError(absl::StrCat("cannot read ", real, ": ", errno_text(errno)));
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxTemplateBytes) {
      return absl::InvalidArgumentError(absl::StrCat("it grew past ", kMaxTemplateBytes, " bytes while read"));
    }
  }
  return text;
}

// The agent keeps ownership of what it creates; the slot's group may read
// and traverse. Skipped when that is the agent's own group already.
absl::Status own_dir(int fd, const RenderOwner& owner, const std::string& path) {
  if (owner.gid != ::getegid() && ::fchown(fd, ::geteuid(), owner.gid) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot give ", path, " to group ", owner.gid, ": ", errno_text(errno)));
  }
  if (::fchmod(fd, 0750) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot set the mode of ", path, ": ", errno_text(errno)));
  }
  return absl::OkStatus();
}

// Opens (creating when missing) the directory `name` below `parent`, never
// through a symlink.
absl::StatusOr<unique_fd> open_subdir(int parent, const std::string& name, const RenderOwner& owner,
                                      const std::string& path) {
  bool created = false;
  if (::mkdirat(parent, name.c_str(), 0700) == 0) {
    created = true;
  } else if (errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create ", path, ": ", errno_text(errno)));
  }
  unique_fd fd(::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot open ", path, " as a directory: ", errno_text(errno)));
  }
  if (created) {
    if (auto st = own_dir(fd.get(), owner, path); !st.ok()) return st;
  }
  return fd;
}

// Writes `text` to `dest` below the render dir `root_fd`: temp file,
// mode, owner, fsync, rename.
absl::Status write_rendered(int root_fd, const std::string& render_dir, const std::string& dest, int index,
                            const std::string& text, uint32_t mode, const RenderOwner& owner) {
  std::vector<std::string> parts;
  for (std::size_t begin = 0;;) {
    const std::size_t end = std::min(dest.find('/', begin), dest.size());
    parts.push_back(dest.substr(begin, end - begin));
    if (end == dest.size()) break;
    begin = end + 1;
  }
  unique_fd sub;
  int dir = root_fd;
  std::string path = render_dir;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    path += "/" + parts[i];
    auto next = open_subdir(dir, parts[i], owner, path);
    if (!next.ok()) return next.status();
    sub = *std::move(next);
    dir = sub.get();
  }
  const std::string& name = parts.back();
  path += "/" + name;
  const std::string tmp = absl::StrCat(".", name, ".tmp-", index);
  unique_fd fd(::openat(dir, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) return absl::FailedPreconditionError(absl::StrCat("cannot create a temp file beside ", path, ": ",
                                                                     errno_text(errno)));
  auto fail = [&](const char* step) {
    const int err = errno;
    ::unlinkat(dir, tmp.c_str(), 0);
    return absl::FailedPreconditionError(absl::StrCat("cannot ", step, " ", path, ": ", errno_text(err),
                                                      err == ENOSPC ? " (the disk is full; free space)" : ""));
  };
  for (std::size_t off = 0; off < text.size();) {
    const ssize_t n = ::write(fd.get(), text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write");
    off += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd.get(), mode) != 0) return fail("set the mode of");
  if ((owner.uid != ::geteuid() || owner.gid != ::getegid()) && ::fchown(fd.get(), owner.uid, owner.gid) != 0) {
    return fail("give the slot's user");
  }
  if (::fsync(fd.get()) != 0) return fail("sync");
  fd.reset();
  if (::renameat(dir, tmp.c_str(), dir, name.c_str()) != 0) return fail("rename the temp file to");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> render_template(std::string_view text, const Placeholders& values,
                                            std::string_view origin) {
  std::string out;
  out.reserve(text.size());
  std::size_t line = 1;
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (c != '{') {
      if (c == '\n') ++line;
      out.push_back(c);
      ++i;
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '{') {
      out.push_back('{');
      i += 2;
      continue;
    }
    const std::size_t n = token_length(text, i);
    if (n == 0) {
      out.push_back(c);
      ++i;
      continue;
    }
    const std::string name(text.substr(i + 1, n - 2));
    auto it = values.find(name);
    if (it == values.end()) {
      std::vector<std::string> known;
      for (const auto& [k, v] : values) known.push_back(absl::StrCat("{", k, "}"));
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(origin), " line ", line, ": unknown placeholder {", name, "}; the placeholders are ",
          absl::StrJoin(known, ", "), " (write {{ for a literal {)"));
    }
    out += it->second;
    i += n;
  }
  return out;
}

absl::Status render_slot_files(const google::protobuf::RepeatedPtrField<tern::v1::TemplateFile>& templates,
                               const Placeholders& values, const std::string& release_dir,
                               const std::string& render_dir, const RenderOwner& owner) {
  namespace fs = std::filesystem;
  if (templates.empty()) return absl::OkStatus();
  std::error_code ec;
  // The render dir and everything in it were made by the agent (the slot's
  // user may not add to them), so removing them follows no one's symlinks.
  fs::remove_all(render_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot remove the old render dir ", render_dir, ": ", ec.message()));
  }
  if (templates.size() > kMaxTemplates) {
    return absl::InvalidArgumentError(absl::StrCat(templates.size(), " templates; at most ", kMaxTemplates));
  }
  std::unique_ptr<char, decltype(&::free)> root(::realpath(release_dir.c_str(), nullptr), &::free);
  if (!root) {
    return absl::FailedPreconditionError(
        absl::StrCat("the release dir ", release_dir, " is not there: ", errno_text(errno)));
  }
  fs::create_directories(fs::path(render_dir).parent_path(), ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot create ", render_dir, ": ", ec.message()));
  if (::mkdir(render_dir.c_str(), 0700) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create ", render_dir, ": ", errno_text(errno)));
  }
  unique_fd dir(::open(render_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir.valid()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot open ", render_dir, ": ", errno_text(errno)));
  }
  if (auto st = own_dir(dir.get(), owner, render_dir); !st.ok()) return st;
  for (int i = 0; i < templates.size(); ++i) {
    const auto& t = templates.Get(i);
    auto fix = [&](const absl::Status& st, const char* todo) {
      return absl::Status(st.code(), absl::StrCat(what(i, t), ": ", st.message(), todo));
    };
    // Checked when the spec was validated; again here, where a path that
    // climbs out would be written as root.
    if (auto st = check_relative_path(t.source()); !st.ok()) return fix(st, " (source)");
    if (auto st = check_relative_path(t.dest()); !st.ok()) return fix(st, " (dest)");
    auto mode = parse_template_mode(t.mode());
    if (!mode.ok()) return fix(mode.status(), "");
    auto text = read_source(root.get(), t.source());
    if (!text.ok()) return fix(text.status(), "");
    auto rendered = render_template(*text, values, t.source());
    if (!rendered.ok()) {
      return fix(rendered.status(), "; fix the template in the release and deploy it as a new version");
    }
    if (auto st = write_rendered(dir.get(), render_dir, t.dest(), i, *rendered, *mode, owner); !st.ok()) {
      return fix(st, "");
    }
  }
  if (::fsync(dir.get()) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot sync ", render_dir, ": ", errno_text(errno)));
  }
  return absl::OkStatus();
}

}  // namespace tern
