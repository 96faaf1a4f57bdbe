// libFuzzer target: release bundles through read_tar_gz, no disk involved.
//
// Input that starts with the gzip magic is read as it is. Anything else is
// taken as a tar stream and wrapped in gzip first, so the fuzzer can work on
// tar headers directly instead of having to find valid deflate data.
//
// Beyond "no crash": every entry handed to the visitor must already satisfy
// the policy of agent/bundle.h, and a file's data must add up to its size.

#include <zlib.h>

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "agent/bundle.h"

namespace {

// The entry and the broken rule, then a crash for libFuzzer to save.
void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "tern fuzz: invariant broken: %s\n", what);
  std::abort();
}

// Stored (level 0) gzip: cheap, and every input byte reaches the tar parser.
std::string gzip_stored(std::string_view raw) {
  z_stream z{};
  require(deflateInit2(&z, Z_NO_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK, "zlib init");
  std::string out(deflateBound(&z, raw.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  require(deflate(&z, Z_FINISH) == Z_STREAM_END, "zlib deflate");
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

bool has_dotdot_or_empty_component(std::string_view path) {
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = path.find('/', start);
    const std::string_view part = path.substr(start, end == std::string_view::npos ? end : end - start);
    if (part.empty() || part == "." || part == "..") return true;
    if (end == std::string_view::npos) return false;
    start = end + 1;
  }
}

// An independent statement of the symlink rule: resolving the target
// lexically from the link's directory never climbs above the top, and '..'
// never follows a name.
bool stays_inside(std::string_view link_path, std::string_view target) {
  long depth = 0;
  for (char c : link_path) depth += c == '/';
  bool named = false;
  std::size_t start = 0;
  while (start <= target.size()) {
    std::size_t end = target.find('/', start);
    if (end == std::string_view::npos) end = target.size();
    const std::string_view part = target.substr(start, end - start);
    if (part == "..") {
      if (named || --depth < 0) return false;
    } else if (!part.empty() && part != ".") {
      named = true;
    }
    start = end + 1;
  }
  return true;
}

class CheckingVisitor final : public tern::BundleVisitor {
 public:
  explicit CheckingVisitor(const tern::BundleLimits& limits) : limits_(limits) {}

  absl::Status begin_entry(const tern::BundleEntry& e) override {
    require(!in_entry_, "begin_entry before end_entry of the previous one");
    in_entry_ = true;
    require(!e.path.empty() && e.path.size() <= limits_.max_path_length, "empty or too long path");
    require(e.path.front() != '/' && e.path.find('\0') == std::string::npos, "absolute path or NUL");
    require(!has_dotdot_or_empty_component(e.path), "path not normalised or with '..'");
    require(e.mode == 0644 || e.mode == 0755, "mode not masked");
    require(e.kind == tern::BundleEntryKind::kFile || e.size == 0, "data for a directory or symlink");
    if (e.kind == tern::BundleEntryKind::kSymlink) {
      require(!e.link_target.empty() && e.link_target.front() != '/', "empty or absolute symlink target");
      require(e.link_target.find('\0') == std::string::npos, "NUL in symlink target");
      require(stays_inside(e.path, e.link_target), "symlink target leaves the release");
    } else {
      require(e.link_target.empty(), "link target on a non-symlink");
    }
    require(++entries_ <= limits_.max_entries, "more entries than the limit");
    expected_ = e.size;
    got_ = 0;
    return absl::OkStatus();
  }
  absl::Status file_data(const char* data, std::size_t len) override {
    require(in_entry_ && data != nullptr && len > 0, "file_data outside an entry or empty");
    got_ += len;
    require(got_ <= expected_, "more data than the entry's size");
    total_ += len;
    require(total_ <= limits_.max_total_bytes, "more data than the byte limit");
    return absl::OkStatus();
  }
  absl::Status end_entry() override {
    require(in_entry_ && got_ == expected_, "less data than the entry's size");
    in_entry_ = false;
    return absl::OkStatus();
  }

 private:
  const tern::BundleLimits& limits_;
  bool in_entry_ = false;
  uint64_t entries_ = 0;
  uint64_t expected_ = 0;
  uint64_t got_ = 0;
  uint64_t total_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  // Small limits keep each run fast; the code paths are the same.
  tern::BundleLimits limits;
  limits.max_total_bytes = 4 << 20;
  limits.max_entries = 256;
  limits.max_path_length = 512;
  limits.max_extended_header = 16 << 10;
  const std::string_view raw(reinterpret_cast<const char*>(data), size);
  const bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  const std::string wrapped = gz ? std::string() : gzip_stored(raw);
  CheckingVisitor visitor(limits);
  const absl::Status st = tern::read_tar_gz(gz ? raw : std::string_view(wrapped), limits, visitor);
  // A successful read ends between entries; an error may stop anywhere.
  (void)st;
  return 0;
}
