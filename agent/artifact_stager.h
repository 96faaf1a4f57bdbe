#pragma once

#include <grpcpp/security/credentials.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/bundle.h"
#include "tern/v1/common.pb.h"

namespace tern {

// Where artifact bytes come from: the coordinator's content-addressed store
// (the source is a sha256) or a web server (the source is a URL).
// Thread-safe.
class ArtifactFetcher {
 public:
  using Sink = std::function<absl::Status(const char* data, std::size_t len)>;
  virtual ~ArtifactFetcher() = default;
  // Streams the artifact `source` names into `sink`; an error when the
  // transfer breaks off, the artifact is unknown or the sink refuses.
  virtual absl::Status fetch(const std::string& source, const Sink& sink) = 0;
  // Fetches into the file `path` (created with mode 0600, or truncated). By
  // default through fetch(), synced to disk; a fetcher whose tool writes files
  // itself overrides it.
  virtual absl::Status fetch_to_file(const std::string& source, const std::string& path);
};

// FetchArtifact over gRPC to the coordinator at `target` (host:port).
// Fetches from the coordinator's store; `credentials` null: plaintext.
std::unique_ptr<ArtifactFetcher> make_grpc_artifact_fetcher(const std::string& target,
                                                            std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr,
                                                            const std::string& server_name = "");

// http:// and https:// URLs, downloaded with curl (redirects followed, 30
// minutes at most). Errors: UNAVAILABLE "downloading <url> failed: <curl's
// reason>".
std::unique_ptr<ArtifactFetcher> make_url_artifact_fetcher();

// Puts releases on disk: <root>/<service>/releases/<version>/.
//
// A release is downloaded into a temp dir beside its final place, its sha256
// checked, unpacked (tar.gz, in-process under the policy and `limits` of
// agent/bundle.h) or installed as one executable, then renamed into place, so
// a release dir that exists is always complete and verified; a refused or
// broken bundle leaves nothing behind. A version once staged is immutable:
// staging it again with another sha256 is refused. Thread-safe for different
// services.
class ArtifactStager {
 public:
  using Progress = std::function<void(const std::string&)>;
  // `fetcher` serves releases without a URL (null: none), `url_fetcher` the
  // ones with a URL (null: make_url_artifact_fetcher()). Neither is owned.
  ArtifactStager(std::string root, ArtifactFetcher* fetcher, BundleLimits limits = BundleLimits(),
                 ArtifactFetcher* url_fetcher = nullptr);

  absl::StatusOr<std::string> stage(const std::string& service, const tern::v1::ReleaseRef& release,
                                    const Progress& progress);
  std::string release_dir(const std::string& service, const std::string& version) const;
  // Removes temp dirs of stagings cut short by a crash; returns how many.
  int remove_abandoned() const;

 private:
  absl::Status download(const tern::v1::ReleaseRef& release, const std::string& file, const Progress& progress);

  std::string root_;
  ArtifactFetcher* fetcher_;
  BundleLimits limits_;
  std::unique_ptr<ArtifactFetcher> own_url_fetcher_;
  ArtifactFetcher* url_fetcher_;
};

}  // namespace tern
