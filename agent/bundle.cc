#include "agent/bundle.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "agent/unique_fd.h"

namespace tern {
namespace {

constexpr std::size_t kBlock = 512;
constexpr std::size_t kChunk = 64 * 1024;
constexpr int64_t kLatestMtime = 253'402'300'799;  // 9999-12-31T23:59:59Z

constexpr const char* kRebuildHint =
    "rebuild the bundle with paths relative to its top directory, e.g. tar -czf app.tar.gz -C build .";
constexpr const char* kOnlyFilesHint =
    "a bundle may hold only regular files, directories and symlinks that stay inside the release";

// Names from the archive go into messages quoted, escaped and cut short, so a
// hostile name cannot forge log lines or flood them.
std::string shown(std::string_view raw) {
  constexpr std::size_t kMax = 200;
  const bool cut = raw.size() > kMax;
  const std::string_view head = raw.substr(0, kMax);
  return absl::StrCat("\"", absl::CHexEscape(absl::string_view(head.data(), head.size())), cut ? "...\"" : "\"");
}

absl::Status bad_bundle(absl::string_view what) { return absl::InvalidArgumentError(what); }

// ---------------------------------------------------------------------------
// gzip

// The decompressed bytes of a (possibly multi-member) gzip stream, counted
// against the byte limit as they are produced.
class GzipStream {
 public:
  GzipStream(ByteSource& source, uint64_t max_bytes) : source_(source), max_bytes_(max_bytes), in_(kChunk) {}
  ~GzipStream() {
    if (initialised_) inflateEnd(&z_);
  }
  GzipStream(const GzipStream&) = delete;
  GzipStream& operator=(const GzipStream&) = delete;

  absl::Status init() {
    // 16 + MAX_WBITS: gzip framing only; a bundle is never raw zlib.
    const int rc = inflateInit2(&z_, 16 + MAX_WBITS);
    if (rc != Z_OK) return absl::ResourceExhaustedError(absl::StrCat("cannot start zlib (error ", rc, ")"));
    initialised_ = true;
    if (auto st = refill(); !st.ok()) return st;
    if (z_.avail_in == 0) return bad_bundle("the bundle is empty; expected a .tar.gz archive");
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(in_[i]); };
    if (byte(0) != 0x1f || (z_.avail_in > 1 && byte(1) != 0x8b)) {
      return bad_bundle("the bundle is not gzip-compressed (a .tar.gz starts with bytes 1f 8b); build it with tar -czf");
    }
    return absl::OkStatus();
  }

  // Up to `len` decompressed bytes; 0 only at the clean end of the gzip data.
  absl::StatusOr<std::size_t> read(char* buf, std::size_t len) {
    if (finished_ || len == 0) return std::size_t{0};
    const uint64_t room = max_bytes_ - std::min(max_bytes_, total_);
    // Ask for one byte more than the limit allows, so going over is seen.
    if (room < len) len = static_cast<std::size_t>(room) + 1;
    z_.next_out = reinterpret_cast<Bytef*>(buf);
    z_.avail_out = static_cast<uInt>(len);
    while (z_.avail_out > 0 && !finished_) {
      if (z_.avail_in == 0) {
        if (auto st = refill(); !st.ok()) return st;
        if (z_.avail_in == 0) {
          return bad_bundle(absl::StrCat("the gzip data ends early (after ", total_ + (len - z_.avail_out),
                                         " unpacked bytes): the bundle is truncated; upload it again"));
        }
      }
      const int rc = inflate(&z_, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        // gzip allows several members back to back; anything else after the
        // first member must be another member.
        if (z_.avail_in == 0) {
          if (auto st = refill(); !st.ok()) return st;
        }
        if (z_.avail_in == 0) {
          finished_ = true;
        } else if (inflateReset(&z_) != Z_OK) {
          return absl::InternalError("cannot reset zlib");
        }
      } else if (rc == Z_MEM_ERROR) {
        return absl::ResourceExhaustedError("out of memory while decompressing the bundle");
      } else if (rc != Z_OK && !(rc == Z_BUF_ERROR && z_.avail_in == 0)) {
        return bad_bundle(absl::StrCat("the gzip data is corrupt after ", total_ + (len - z_.avail_out),
                                       " unpacked bytes (", z_.msg != nullptr ? z_.msg : "zlib error", ")",
                                       "; rebuild the bundle with tar -czf"));
      }
    }
    const std::size_t got = len - z_.avail_out;
    total_ += got;
    if (total_ > max_bytes_) {
      return bad_bundle(absl::StrCat("the bundle unpacks to more than the limit of ", max_bytes_,
                                     " bytes; shrink it (or split it) or raise the agent's bundle limit"));
    }
    return got;
  }

  uint64_t total() const { return total_; }
  uint64_t max_bytes() const { return max_bytes_; }

 private:
  absl::Status refill() {
    if (source_eof_) return absl::OkStatus();
    auto n = source_.read(in_.data(), in_.size());
    if (!n.ok()) return n.status();
    if (*n == 0) source_eof_ = true;
    z_.next_in = reinterpret_cast<Bytef*>(in_.data());
    z_.avail_in = static_cast<uInt>(*n);
    return absl::OkStatus();
  }

  ByteSource& source_;
  const uint64_t max_bytes_;
  z_stream z_{};
  bool initialised_ = false;
  bool source_eof_ = false;
  bool finished_ = false;
  uint64_t total_ = 0;
  std::vector<char> in_;  // on the heap: unpacking may run on a small thread stack
};

// ---------------------------------------------------------------------------
// tar headers

// Offsets of the fields we read (POSIX ustar; GNU shares all but prefix).
struct Field {
  std::size_t offset;
  std::size_t length;
};
constexpr Field kName{0, 100};
constexpr Field kMode{100, 8};
constexpr Field kSize{124, 12};
constexpr Field kMtime{136, 12};
constexpr Field kChecksum{148, 8};
constexpr std::size_t kTypeflag = 156;
constexpr Field kLinkname{157, 100};
constexpr Field kMagic{257, 8};  // magic[6] + version[2]
constexpr Field kPrefix{345, 155};

using Block = std::array<char, kBlock>;

std::string_view field(const Block& b, Field f) { return std::string_view(b.data() + f.offset, f.length); }

// A fixed-width text field: up to its first NUL.
std::string text_field(const Block& b, Field f) {
  std::string_view v = field(b, f);
  return std::string(v.substr(0, v.find('\0')));
}

// Octal digits (leading spaces, then digits, then NUL/space padding), or
// GNU's base-256 (high bit of the first byte set). nullopt when malformed or
// negative (base-256 0xff) or beyond int64.
std::optional<uint64_t> numeric_field(const Block& b, Field f) {
  std::string_view v = field(b, f);
  const auto first = static_cast<unsigned char>(v[0]);
  if (first & 0x80) {
    if (first != 0x80) return std::nullopt;  // negative
    uint64_t n = 0;
    for (std::size_t i = 1; i < v.size(); ++i) {
      if (n > (std::numeric_limits<uint64_t>::max() >> 8)) return std::nullopt;
      n = (n << 8) | static_cast<unsigned char>(v[i]);
    }
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return n;
  }
  std::size_t i = 0;
  while (i < v.size() && v[i] == ' ') ++i;
  uint64_t n = 0;
  bool any = false;
  for (; i < v.size() && v[i] >= '0' && v[i] <= '7'; ++i) {
    if (n > (std::numeric_limits<uint64_t>::max() >> 3)) return std::nullopt;
    n = (n << 3) | static_cast<uint64_t>(v[i] - '0');
    any = true;
  }
  for (; i < v.size(); ++i) {
    if (v[i] != ' ' && v[i] != '\0') return std::nullopt;
  }
  if (!any) return std::nullopt;
  return n;
}

bool checksum_matches(const Block& b) {
  auto want = numeric_field(b, kChecksum);
  if (!want) return false;
  // The sum treats the checksum field itself as spaces. Old tars summed
  // signed chars; accept either.
  uint64_t unsigned_sum = 0;
  int64_t signed_sum = 0;
  for (std::size_t i = 0; i < kBlock; ++i) {
    const bool in_field = i >= kChecksum.offset && i < kChecksum.offset + kChecksum.length;
    const char c = in_field ? ' ' : b[i];
    unsigned_sum += static_cast<unsigned char>(c);
    signed_sum += static_cast<signed char>(c);
  }
  return *want == unsigned_sum || static_cast<int64_t>(*want) == signed_sum;
}

bool is_zero_block(const Block& b) {
  return std::all_of(b.begin(), b.end(), [](char c) { return c == '\0'; });
}

enum class Flavor { kUstar, kGnu, kUnknown };

Flavor flavor_of(const Block& b) {
  std::string_view magic = field(b, kMagic);
  if (magic == std::string_view("ustar\0" "00", 8)) return Flavor::kUstar;
  if (magic == std::string_view("ustar  \0", 8)) return Flavor::kGnu;
  return Flavor::kUnknown;
}

// ---------------------------------------------------------------------------
// paths

std::vector<std::string_view> split_path(std::string_view p) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (start <= p.size()) {
    std::size_t end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    std::string_view part = p.substr(start, end - start);
    if (!part.empty() && part != ".") parts.push_back(part);
    start = end + 1;
  }
  return parts;
}

// The entry's path made relative and canonical, or why it is refused.
// Empty means the top directory itself ("./").
absl::StatusOr<std::string> normalise_entry_path(std::string_view raw, uint64_t index, const BundleLimits& limits) {
  const std::string who = absl::StrCat("entry ", shown(raw), " (member ", index, ")");
  if (raw.empty()) return bad_bundle(absl::StrCat("member ", index, " has an empty name; ", kRebuildHint));
  if (raw.find('\0') != std::string_view::npos) {
    return bad_bundle(absl::StrCat(who, ": the name contains a NUL byte; ", kRebuildHint));
  }
  if (raw.size() > limits.max_path_length) {
    return bad_bundle(absl::StrCat(who, ": the name is ", raw.size(), " bytes, over the limit of ",
                                   limits.max_path_length, "; shorten the paths in the bundle"));
  }
  if (raw[0] == '/') return bad_bundle(absl::StrCat(who, ": absolute paths are refused; ", kRebuildHint));
  std::string out;
  for (std::string_view part : split_path(raw)) {
    if (part == "..") return bad_bundle(absl::StrCat(who, ": paths with a '..' component are refused; ", kRebuildHint));
    if (part.size() > NAME_MAX) {
      return bad_bundle(absl::StrCat(who, ": a path component is longer than ", NAME_MAX, " bytes; shorten it"));
    }
    if (!out.empty()) out += '/';
    out.append(part.data(), part.size());
  }
  return out;
}

// A symlink at `entry_path` (normalised) may point to `target` when the
// target is relative, uses ".." only as leading components, and those do not
// climb above the release dir. Since every ".." then walks up through the
// link's own parents (real directories: nothing is created through a
// symlink) and every later component walks down, no combination of such
// links can leave the release.
absl::Status check_symlink_target(const std::string& entry_path, std::string_view target, uint64_t index,
                                  const BundleLimits& limits) {
  const std::string who = absl::StrCat("symlink ", shown(entry_path), " (member ", index, ") -> ", shown(target));
  const std::string hint =
      "a symlink must point inside the release with a relative path (e.g. lib/libx.so -> libx.so.1); "
      "copy the file into the bundle instead";
  if (target.empty()) return bad_bundle(absl::StrCat(who, ": the target is empty; ", hint));
  if (target.find('\0') != std::string_view::npos) {
    return bad_bundle(absl::StrCat(who, ": the target contains a NUL byte; ", hint));
  }
  if (target.size() > limits.max_path_length) {
    return bad_bundle(absl::StrCat(who, ": the target is longer than ", limits.max_path_length, " bytes; ", hint));
  }
  if (target[0] == '/') return bad_bundle(absl::StrCat(who, ": absolute targets are refused; ", hint));
  const std::size_t depth = split_path(entry_path).size() - 1;  // directories above the link
  std::size_t ups = 0;
  bool named = false;
  for (std::string_view part : split_path(target)) {
    if (part == "..") {
      if (named) {
        return bad_bundle(absl::StrCat(who, ": '..' may only lead the target (\"../lib/x\", not \"lib/../x\"); ",
                                       hint));
      }
      if (++ups > depth) return bad_bundle(absl::StrCat(who, ": the target points outside the release; ", hint));
    } else {
      named = true;
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// pax

// Extended attributes for the next entry; what we honour of them.
struct Extended {
  std::optional<std::string> path;
  std::optional<std::string> linkpath;
  std::optional<uint64_t> size;
  std::optional<int64_t> mtime;
  bool have_pax = false;
  bool have_long_name = false;
  bool have_long_link = false;
  bool any() const { return have_pax || have_long_name || have_long_link; }
};

std::optional<uint64_t> parse_decimal(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

// "1700000000", "1700000000.123456789" or "-5"; sub-seconds are dropped.
std::optional<int64_t> parse_pax_time(std::string_view s) {
  bool negative = false;
  if (!s.empty() && s[0] == '-') {
    negative = true;
    s.remove_prefix(1);
  }
  const std::size_t dot = s.find('.');
  if (dot != std::string_view::npos) {
    std::string_view frac = s.substr(dot + 1);
    if (!frac.empty() && !parse_decimal(frac.substr(0, std::min<std::size_t>(frac.size(), 19)))) return std::nullopt;
    s = s.substr(0, dot);
  }
  auto n = parse_decimal(s);
  if (!n || *n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return negative ? -static_cast<int64_t>(*n) : static_cast<int64_t>(*n);
}

// Parses "<len> <key>=<value>\n" records. `global` headers may not set what
// only makes sense per entry.
absl::Status parse_pax(std::string_view data, uint64_t index, bool global, Extended& ext) {
  const std::string who = absl::StrCat("pax ", global ? "global" : "extended", " header (member ", index, ")");
  const auto malformed = [&](std::size_t at) {
    return bad_bundle(absl::StrCat(who, " is malformed at byte ", at, "; rebuild the bundle with GNU tar"));
  };
  std::size_t pos = 0;
  while (pos < data.size()) {
    const std::size_t space = data.find(' ', pos);
    if (space == std::string_view::npos) return malformed(pos);
    auto len = parse_decimal(data.substr(pos, space - pos));
    if (!len || *len <= space - pos + 1 || *len > data.size() - pos) return malformed(pos);
    std::string_view record = data.substr(space + 1, static_cast<std::size_t>(*len) - (space - pos + 1));
    if (record.empty() || record.back() != '\n') return malformed(pos);
    record.remove_suffix(1);
    const std::size_t eq = record.find('=');
    if (eq == 0 || eq == std::string_view::npos) return malformed(pos);
    std::string_view key = record.substr(0, eq);
    std::string_view value = record.substr(eq + 1);
    const std::string key_text(key);
    if (key.substr(0, 11) == "GNU.sparse.") {
      return bad_bundle(absl::StrCat(who, ": sparse files are refused; ", kOnlyFilesHint,
                                     " (rebuild without --sparse)"));
    }
    const bool per_entry = key == "path" || key == "linkpath" || key == "size";
    if (global && per_entry) {
      return bad_bundle(absl::StrCat(who, " sets \"", absl::CHexEscape(key_text),
                                     "\" for every entry, which tern does not support; rebuild the bundle with GNU tar"));
    }
    // An empty value removes the attribute (the header block's field counts).
    if (key == "path") {
      ext.path = value.empty() ? std::nullopt : std::optional<std::string>(value);
    } else if (key == "linkpath") {
      ext.linkpath = value.empty() ? std::nullopt : std::optional<std::string>(value);
    } else if (key == "size") {
      if (value.empty()) {
        ext.size.reset();
      } else {
        auto n = parse_decimal(value);
        if (!n || *n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return bad_bundle(absl::StrCat(who, ": size ", shown(value), " is not a byte count"));
        }
        ext.size = *n;
      }
    } else if (key == "mtime" && !global) {
      if (value.empty()) {
        ext.mtime.reset();
      } else if (auto t = parse_pax_time(value)) {
        ext.mtime = *t;
      } else {
        return bad_bundle(absl::StrCat(who, ": mtime ", shown(value), " is not a time"));
      }
    }
    // Everything else (atime, uid, uname, comment, SCHILY.*, ...) is not honoured.
    pos += static_cast<std::size_t>(*len);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// the tar stream

class TarReader {
 public:
  TarReader(GzipStream& in, const BundleLimits& limits, BundleVisitor& visitor)
      : in_(in), limits_(limits), visitor_(visitor), buf_(kChunk) {}

  absl::Status run() {
    Block header;
    Extended ext;
    for (;;) {
      auto got = read_some(header.data(), kBlock);
      if (!got.ok()) return got.status();
      if (*got == 0) {
        return bad_bundle(
            "the tar archive ends without its end-of-archive marker: the bundle is truncated; build it with tar -czf");
      }
      if (*got < kBlock) return truncated("a header");
      ++members_;
      if (is_zero_block(header)) {
        if (ext.any()) {
          return bad_bundle(absl::StrCat("member ", members_ - 1,
                                         " is an extended header with no entry after it; the bundle is corrupt"));
        }
        return drain();
      }
      if (!checksum_matches(header)) {
        return bad_bundle(absl::StrCat("member ", members_, ": the tar header checksum does not match: the bundle is "
                                       "corrupt or not a tar archive; build it with tar -czf"));
      }
      const Flavor flavor = flavor_of(header);
      if (flavor == Flavor::kUnknown) {
        return bad_bundle(absl::StrCat("member ", members_,
                                       ": not a ustar, GNU or pax tar header (old v7 archives are refused); "
                                       "build the bundle with GNU tar"));
      }
      const char type = header[kTypeflag];
      auto st = member(header, flavor, type, ext);
      if (!st.ok()) return st;
    }
  }

 private:
  absl::StatusOr<std::size_t> read_some(char* buf, std::size_t len) {
    std::size_t done = 0;
    while (done < len) {
      auto n = in_.read(buf + done, len - done);
      if (!n.ok()) return n.status();
      if (*n == 0) break;
      done += *n;
    }
    return done;
  }

  absl::Status truncated(absl::string_view what) {
    return bad_bundle(absl::StrCat("the tar archive ends in the middle of ", what, " (member ", members_,
                                   "): the bundle is truncated; build it with tar -czf"));
  }

  absl::Status skip_padding(uint64_t size) {
    const std::size_t pad = static_cast<std::size_t>((kBlock - size % kBlock) % kBlock);
    if (pad == 0) return absl::OkStatus();
    char buf[kBlock];
    auto got = read_some(buf, pad);
    if (!got.ok()) return got.status();
    if (*got < pad) return truncated("the padding after an entry");
    return absl::OkStatus();
  }

  // The data of an extended header (long name, pax records), padding consumed.
  absl::StatusOr<std::string> read_extended(uint64_t size, absl::string_view what) {
    if (size > limits_.max_extended_header) {
      return bad_bundle(absl::StrCat("member ", members_, ": the ", what, " is ", size, " bytes, over the limit of ",
                                     limits_.max_extended_header, "; shorten the paths in the bundle"));
    }
    std::string data(static_cast<std::size_t>(size), '\0');
    auto got = read_some(data.data(), data.size());
    if (!got.ok()) return got.status();
    if (*got < data.size()) return truncated(what);
    if (auto st = skip_padding(size); !st.ok()) return st;
    return data;
  }

  // A GNU long name: the name then NUL padding; a NUL inside is refused.
  static std::optional<std::string> long_name(std::string data) {
    while (!data.empty() && data.back() == '\0') data.pop_back();
    if (data.find('\0') != std::string::npos) return std::nullopt;
    return data;
  }

  absl::Status member(const Block& header, Flavor flavor, char type, Extended& ext) {
    auto header_size = numeric_field(header, kSize);
    if (!header_size) {
      return bad_bundle(absl::StrCat("member ", members_, ": the size field is malformed; the bundle is corrupt"));
    }
    switch (type) {
      case 'L':
      case 'K': {
        const bool is_name = type == 'L';
        if (is_name ? ext.have_long_name : ext.have_long_link) {
          return bad_bundle(absl::StrCat("member ", members_, ": two GNU long-", is_name ? "name" : "link",
                                         " headers for one entry; the bundle is corrupt"));
        }
        auto data = read_extended(*header_size, is_name ? "GNU long name" : "GNU long link name");
        if (!data.ok()) return data.status();
        auto name = long_name(std::move(*data));
        if (!name) {
          return bad_bundle(absl::StrCat("member ", members_, ": a GNU long name contains a NUL byte; ", kRebuildHint));
        }
        // pax records, when present, take precedence over GNU long names.
        if (is_name) {
          ext.have_long_name = true;
          if (!ext.path) ext.path = std::move(*name);
        } else {
          ext.have_long_link = true;
          if (!ext.linkpath) ext.linkpath = std::move(*name);
        }
        return absl::OkStatus();
      }
      case 'x': {
        if (ext.have_pax) {
          return bad_bundle(
              absl::StrCat("member ", members_, ": two pax extended headers for one entry; the bundle is corrupt"));
        }
        auto data = read_extended(*header_size, "pax extended header");
        if (!data.ok()) return data.status();
        ext.have_pax = true;
        return parse_pax(*data, members_, /*global=*/false, ext);
      }
      case 'g': {
        if (auto st = count_entry(); !st.ok()) return st;
        auto data = read_extended(*header_size, "pax global header");
        if (!data.ok()) return data.status();
        Extended ignored;
        return parse_pax(*data, members_, /*global=*/true, ignored);
      }
      default:
        break;
    }
    if (auto st = count_entry(); !st.ok()) return st;

    std::string raw_name;
    if (ext.path) {
      raw_name = *ext.path;
    } else {
      raw_name = text_field(header, kName);
      // Only POSIX ustar has a prefix; GNU keeps other fields there.
      if (flavor == Flavor::kUstar) {
        std::string prefix = text_field(header, kPrefix);
        if (!prefix.empty()) raw_name = absl::StrCat(prefix, "/", raw_name);
      }
    }
    std::string raw_link = ext.linkpath ? *ext.linkpath : text_field(header, kLinkname);
    const uint64_t size = ext.size ? *ext.size : *header_size;
    const std::string who = absl::StrCat("entry ", shown(raw_name), " (member ", members_, ")");

    BundleEntry entry;
    entry.index = members_;
    switch (type) {
      case '0':
      case '\0':
      case '7':  // contiguous file: a regular file everywhere that matters
        entry.kind = BundleEntryKind::kFile;
        break;
      case '5':
        entry.kind = BundleEntryKind::kDirectory;
        break;
      case '2':
        entry.kind = BundleEntryKind::kSymlink;
        break;
      case '1':
        return bad_bundle(absl::StrCat(who, " is a hard link to ", shown(raw_link), "; ", kOnlyFilesHint,
                                       ": ship a copy or a relative symlink instead"));
      case '3':
      case '4':
        return bad_bundle(absl::StrCat(who, " is a ", type == '3' ? "character" : "block", " device; ",
                                       kOnlyFilesHint, ": remove it from the bundle"));
      case '6':
        return bad_bundle(absl::StrCat(who, " is a fifo; ", kOnlyFilesHint, ": remove it from the bundle"));
      case 'S':
        return bad_bundle(absl::StrCat(who, " is a sparse file; ", kOnlyFilesHint, " (rebuild without --sparse)"));
      default:
        return bad_bundle(absl::StrCat(who, " has tar entry type ", shown(std::string_view(&type, 1)),
                                       ", which tern does not unpack; ", kOnlyFilesHint));
    }
    if (entry.kind != BundleEntryKind::kFile && size != 0) {
      return bad_bundle(absl::StrCat(who, " is a ", entry.kind == BundleEntryKind::kDirectory ? "directory" : "symlink",
                                     " with ", size, " bytes of data; the bundle is corrupt"));
    }
    auto path = normalise_entry_path(raw_name, members_, limits_);
    if (!path.ok()) return path.status();
    entry.path = std::move(*path);
    if (entry.kind != BundleEntryKind::kDirectory && raw_name.back() == '/') {
      return bad_bundle(absl::StrCat(who, " is not a directory but its name ends with '/'; the bundle is corrupt"));
    }
    if (entry.path.empty() && entry.kind != BundleEntryKind::kDirectory) {
      return bad_bundle(absl::StrCat(who, " would replace the release directory itself; ", kRebuildHint));
    }
    if (entry.kind == BundleEntryKind::kSymlink) {
      if (auto st = check_symlink_target(entry.path, raw_link, members_, limits_); !st.ok()) return st;
      entry.link_target = std::move(raw_link);
    }
    auto mode = numeric_field(header, kMode);
    if (!mode) return bad_bundle(absl::StrCat(who, ": the mode field is malformed; the bundle is corrupt"));
    // Never setuid/setgid/sticky, never group/other-writable: see bundle.h.
    entry.mode = (entry.kind == BundleEntryKind::kDirectory || (*mode & 0111) != 0) ? 0755 : 0644;
    if (ext.mtime) {
      entry.mtime = *ext.mtime;
    } else if (auto t = numeric_field(header, kMtime)) {
      entry.mtime = static_cast<int64_t>(*t);
    }
    // Before 1970 or after 9999: not a time worth keeping (and futimens may refuse it).
    if (entry.mtime < 0 || entry.mtime > kLatestMtime) entry.mtime = 0;
    entry.size = size;
    ext = Extended();

    const uint64_t room = in_.max_bytes() - std::min(in_.max_bytes(), in_.total());
    if (size > room) {
      return bad_bundle(absl::StrCat(who, " is ", size, " bytes: the bundle would unpack to more than the limit of ",
                                     in_.max_bytes(), " bytes; shrink it (or split it) or raise the agent's bundle limit"));
    }
    // The top directory ("./") is the release dir itself: nothing to do.
    if (entry.path.empty()) return absl::OkStatus();
    if (auto st = visitor_.begin_entry(entry); !st.ok()) return st;
    if (entry.kind == BundleEntryKind::kFile) {
      if (auto st = copy_data(entry); !st.ok()) return st;
    }
    return visitor_.end_entry();
  }

  absl::Status count_entry() {
    if (++entries_ > limits_.max_entries) {
      return bad_bundle(absl::StrCat("the bundle has more than ", limits_.max_entries,
                                     " entries, the limit; pack the release into fewer files"));
    }
    return absl::OkStatus();
  }

  absl::Status copy_data(const BundleEntry& entry) {
    uint64_t left = entry.size;
    while (left > 0) {
      const std::size_t want = static_cast<std::size_t>(std::min<uint64_t>(left, buf_.size()));
      auto got = read_some(buf_.data(), want);
      if (!got.ok()) return got.status();
      if (*got < want) return truncated(absl::StrCat("the data of ", shown(entry.path)));
      if (auto st = visitor_.file_data(buf_.data(), want); !st.ok()) return st;
      left -= want;
    }
    return skip_padding(entry.size);
  }

  // After the end-of-archive marker: read the rest so the gzip trailer (CRC,
  // length) is checked. tar pads to its record size with zeros; anything
  // else there is ignored, as tar does, but still counts against the limit.
  absl::Status drain() {
    for (;;) {
      auto n = in_.read(buf_.data(), buf_.size());
      if (!n.ok()) return n.status();
      if (*n == 0) return absl::OkStatus();
    }
  }

  GzipStream& in_;
  const BundleLimits& limits_;
  BundleVisitor& visitor_;
  uint64_t members_ = 0;
  uint64_t entries_ = 0;
  std::vector<char> buf_;
};

class MemorySource final : public ByteSource {
 public:
  explicit MemorySource(std::string_view bytes) : bytes_(bytes) {}
  absl::StatusOr<std::size_t> read(char* buf, std::size_t len) override {
    const std::size_t n = std::min(len, bytes_.size());
    std::memcpy(buf, bytes_.data(), n);
    bytes_.remove_prefix(n);
    return n;
  }

 private:
  std::string_view bytes_;
};

class FileSource final : public ByteSource {
 public:
  FileSource(unique_fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  absl::StatusOr<std::size_t> read(char* buf, std::size_t len) override {
    for (;;) {
      const ssize_t n = ::read(fd_.get(), buf, len);
      if (n >= 0) return static_cast<std::size_t>(n);
      if (errno != EINTR) {
        return absl::InternalError(absl::StrCat("reading the bundle ", path_, ": ", std::strerror(errno)));
      }
    }
  }

 private:
  unique_fd fd_;
  std::string path_;
};

// ---------------------------------------------------------------------------
// writing

absl::Status io_error(absl::string_view what, const std::string& path, int err) {
  const std::string msg = absl::StrCat(what, " ", shown(path), " in the release dir: ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) {
    return absl::ResourceExhaustedError(absl::StrCat(msg, "; free disk space on the host and deploy again"));
  }
  return absl::InternalError(msg);
}

// Creates entries under `root` one path component at a time, each opened
// with O_NOFOLLOW, and creates nothing that already exists (O_EXCL, mkdirat,
// symlinkat), so a symlink or file from an earlier entry is never followed or
// replaced.
class DiskWriter final : public BundleVisitor {
 public:
  explicit DiskWriter(int root) : root_(root) {}

  absl::Status begin_entry(const BundleEntry& entry) override {
    entry_ = entry;
    std::vector<std::string_view> parts = split_path(entry.path);
    const std::string name(parts.back());
    parts.pop_back();
    auto parent = open_parent(parts);
    if (!parent.ok()) return parent.status();
    const int dir = *parent;
    switch (entry.kind) {
      case BundleEntryKind::kDirectory:
        return make_directory(dir, name);
      case BundleEntryKind::kSymlink:
        if (::symlinkat(entry.link_target.c_str(), dir, name.c_str()) != 0) {
          if (errno == EEXIST) return replaces();
          return io_error("creating symlink", entry.path, errno);
        }
        return absl::OkStatus();
      case BundleEntryKind::kFile: {
        file_ = unique_fd(::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!file_.valid()) {
          if (errno == EEXIST) return replaces();
          return io_error("creating file", entry.path, errno);
        }
        return absl::OkStatus();
      }
    }
    return absl::InternalError("unknown bundle entry kind");
  }

  absl::Status file_data(const char* data, std::size_t len) override {
    while (len > 0) {
      const ssize_t n = ::write(file_.get(), data, len);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return io_error("writing", entry_.path, errno);
      data += n;
      len -= static_cast<std::size_t>(n);
    }
    return absl::OkStatus();
  }

  absl::Status end_entry() override {
    if (!file_.valid()) return absl::OkStatus();
    if (::fchmod(file_.get(), entry_.mode) != 0) return io_error("setting the mode of", entry_.path, errno);
    const struct timespec times[2] = {{0, UTIME_OMIT}, {static_cast<time_t>(entry_.mtime), 0}};
    if (::futimens(file_.get(), times) != 0) return io_error("setting the time of", entry_.path, errno);
    if (::close(file_.release()) != 0) return io_error("writing", entry_.path, errno);
    return absl::OkStatus();
  }

 private:
  absl::Status replaces() const {
    return bad_bundle(absl::StrCat("entry ", shown(entry_.path), " (member ", entry_.index,
                                   ") would replace an earlier entry of the same name; ",
                                   "a bundle may name each path once (directories excepted): rebuild it"));
  }

  // The directory holding the entry, creating missing ones (tar archives
  // need not list every directory). The last one is kept open: archives list
  // a directory's entries together, and a directory once created here is
  // never replaced, so the cached fd stays right.
  absl::StatusOr<int> open_parent(const std::vector<std::string_view>& parts) {
    if (parts.empty()) return root_;
    std::string path;
    for (std::string_view part : parts) {
      if (!path.empty()) path += '/';
      path.append(part.data(), part.size());
    }
    if (parent_.valid() && path == parent_path_) return parent_.get();
    unique_fd cur;
    std::string walked;
    for (std::string_view part : parts) {
      const std::string name(part);
      absl::StrAppend(&walked, walked.empty() ? "" : "/", name);
      const int at = cur.valid() ? cur.get() : root_;
      unique_fd next(::openat(at, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next.valid() && errno == ENOENT) {
        if (::mkdirat(at, name.c_str(), 0755) != 0) return io_error("creating directory", walked, errno);
        next = unique_fd(::openat(at, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (next.valid() && ::fchmod(next.get(), 0755) != 0) return io_error("setting the mode of", walked, errno);
      }
      if (!next.valid()) {
        if (errno == ELOOP || errno == ENOTDIR) {
          return bad_bundle(absl::StrCat("entry ", shown(entry_.path), " (member ", entry_.index, ") lies under ",
                                         shown(walked),
                                         ", which an earlier entry made a file or symlink; nothing is unpacked "
                                         "through a symlink: rebuild the bundle"));
        }
        return io_error("opening directory", walked, errno);
      }
      cur = std::move(next);
    }
    parent_ = std::move(cur);
    parent_path_ = std::move(path);
    return parent_.get();
  }

  absl::Status make_directory(int dir, const std::string& name) {
    if (::mkdirat(dir, name.c_str(), 0755) != 0) {
      if (errno != EEXIST) return io_error("creating directory", entry_.path, errno);
      struct stat st;
      if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return io_error("checking", entry_.path, errno);
      if (!S_ISDIR(st.st_mode)) return replaces();
      return absl::OkStatus();  // a directory named twice: fine
    }
    // mkdirat's mode is cut by the umask; set it exactly.
    unique_fd d(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!d.valid() || ::fchmod(d.get(), entry_.mode) != 0) return io_error("setting the mode of", entry_.path, errno);
    return absl::OkStatus();
  }

  const int root_;
  BundleEntry entry_;
  unique_fd file_;
  unique_fd parent_;
  std::string parent_path_;
};

}  // namespace

absl::Status read_tar_gz(ByteSource& source, const BundleLimits& limits, BundleVisitor& visitor) {
  GzipStream gz(source, limits.max_total_bytes);
  if (auto st = gz.init(); !st.ok()) return st;
  TarReader tar(gz, limits, visitor);
  return tar.run();
}

absl::Status read_tar_gz(std::string_view bytes, const BundleLimits& limits, BundleVisitor& visitor) {
  MemorySource source(bytes);
  return read_tar_gz(source, limits, visitor);
}

absl::Status unpack_bundle(const std::string& archive_path, const std::string& dest_dir, const BundleLimits& limits) {
  unique_fd archive(::open(archive_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!archive.valid()) {
    return absl::InternalError(absl::StrCat("cannot open the bundle ", archive_path, ": ", std::strerror(errno)));
  }
  unique_fd root(::open(dest_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root.valid()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot open ", dest_dir, " to unpack a bundle into: ",
                                                      std::strerror(errno), "; create it first"));
  }
  std::error_code ec;
  if (!std::filesystem::is_empty(dest_dir, ec) || ec) {
    return absl::FailedPreconditionError(
        absl::StrCat(dest_dir, " is not empty; a bundle is only unpacked into an empty directory"));
  }
  FileSource source(std::move(archive), archive_path);
  DiskWriter writer(root.get());
  if (auto st = read_tar_gz(source, limits, writer); !st.ok()) return st;
  if (::syncfs(root.get()) != 0) {
    return absl::InternalError(absl::StrCat("flushing the unpacked bundle in ", dest_dir, " to disk: ",
                                            std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace tern
