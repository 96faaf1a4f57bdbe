#pragma once

// Release bundles: .tar.gz archives the coordinator sends, unpacked by an
// agent that runs as root. Everything in a bundle is hostile until checked.
//
// Two layers, so the parser can be fuzzed without touching disk:
//
//   read_tar_gz()   gunzips (zlib) and parses tar (ustar, GNU and pax
//                   headers) and hands each accepted entry to a BundleVisitor.
//                   It enforces the entry policy and the limits below; it
//                   never touches the filesystem.
//   unpack_bundle() feeds read_tar_gz() into a writer that creates every
//                   entry relative to directory fds opened with O_NOFOLLOW, so
//                   nothing can be written outside `dest_dir`, not even
//                   through a symlink an earlier entry of the same archive
//                   created.
//
// The policy (every refusal names the entry, the reason and what to do):
//   - Regular files, directories and symlinks only. Hard links, devices,
//     fifos, sparse files, sockets and unknown entry types are refused.
//   - Paths are relative: absolute paths, any ".." component, empty names,
//     NUL bytes and paths longer than BundleLimits::max_path_length are
//     refused. "." components and repeated slashes are dropped ("./bin//app"
//     is "bin/app"); the "./" entry GNU tar writes for the top dir is skipped.
//   - A symlink must stay inside the release: its target is relative, may use
//     ".." only as leading components, and those may not climb above the
//     release dir ("lib/libfoo.so -> libfoo.so.1" and
//     "node_modules/.bin/x -> ../x/cli.js" are fine; "/etc/passwd",
//     "../../etc" and "a/../../b" are not). Because ".." never follows a
//     name, no chain of symlinks inside the release can climb out of it.
//   - Modes are not honoured: a file with any execute bit becomes 0755,
//     others 0644, directories 0755. setuid, setgid and sticky bits are
//     stripped rather than refused: build trees pick up a setgid directory
//     easily, and the release runs as the service's configured user anyway,
//     so refusing would only break honest bundles. Owners are never honoured
//     (files belong to the agent). File modification times are kept.
//   - An entry may not replace an earlier one, except a directory repeated as
//     a directory; nothing is ever written through a symlink.
//   - Limits: unpacked bytes (the whole decompressed tar stream, so a gzip
//     bomb stops at the limit), entry count, path length, extended header size.
//
// Thread-safe: no shared state.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern {

struct BundleLimits {
  // Bytes of the decompressed tar stream (headers, file data, padding).
  uint64_t max_total_bytes = uint64_t{4} << 30;
  // Entries (files, directories, symlinks, pax global headers).
  uint64_t max_entries = 100'000;
  // Of an entry's path and of a symlink's target, in bytes.
  std::size_t max_path_length = 4096;
  // Of one pax extended header or GNU long-name record.
  std::size_t max_extended_header = 1 << 20;
};

enum class BundleEntryKind { kFile, kDirectory, kSymlink };

struct BundleEntry {
  // Normalised: relative, '/'-separated, no "", "." or ".." components.
  std::string path;
  BundleEntryKind kind = BundleEntryKind::kFile;
  // Already masked by the policy: 0755 or 0644 (files), 0755 (directories).
  uint32_t mode = 0644;
  // Files: bytes of content that follow through file_data().
  uint64_t size = 0;
  // Seconds since the epoch; 0 when the archive gives none, or one before
  // 1970 or after 9999.
  int64_t mtime = 0;
  // Symlinks: the target as written in the archive (already checked).
  std::string link_target;
  // 1-based position of the entry's header in the archive, for messages.
  uint64_t index = 0;
};

// Receives the accepted entries in archive order. For each entry:
// begin_entry(), then (files only) file_data() zero or more times with
// consecutive chunks of exactly `size` bytes in total, then end_entry(). An
// error from any call stops reading and is returned by read_tar_gz().
class BundleVisitor {
 public:
  virtual ~BundleVisitor() = default;
  virtual absl::Status begin_entry(const BundleEntry& entry) = 0;
  virtual absl::Status file_data(const char* data, std::size_t len) = 0;
  virtual absl::Status end_entry() = 0;
};

// Where compressed bytes come from. read() fills up to `len` bytes and
// returns how many; 0 means the end of the input.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual absl::StatusOr<std::size_t> read(char* buf, std::size_t len) = 0;
};

// Gunzips and parses a whole .tar.gz from `source`, applying the policy and
// `limits`, and calls `visitor` for each accepted entry. Requires the tar
// end-of-archive marker and a complete gzip stream (trailer checked), so a
// truncated bundle is an error, not a shorter release. Errors:
// INVALID_ARGUMENT for anything wrong with the bundle (corrupt, truncated,
// refused entry, over a limit); whatever `source` or `visitor` return.
absl::Status read_tar_gz(ByteSource& source, const BundleLimits& limits, BundleVisitor& visitor);
// The same over bytes in memory (tests, fuzzing).
absl::Status read_tar_gz(std::string_view bytes, const BundleLimits& limits, BundleVisitor& visitor);

// Unpacks the .tar.gz at `archive_path` into `dest_dir`, which must exist and
// be empty. On error `dest_dir` may hold part of the bundle (the caller
// removes it; ArtifactStager unpacks into a temp dir for that reason), but
// nothing outside `dest_dir` has been created or changed. The data is
// flushed to disk (syncfs) before success is returned. Errors:
// INVALID_ARGUMENT (the bundle), FAILED_PRECONDITION (dest_dir missing or not
// empty), RESOURCE_EXHAUSTED (disk full), INTERNAL (other I/O errors).
absl::Status unpack_bundle(const std::string& archive_path, const std::string& dest_dir,
                           const BundleLimits& limits = BundleLimits());

}  // namespace tern
