#include "coordinator/service_service.h"

#include "coordinator/serve.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"
#include "core/service_spec.h"
#include "core/sha256.h"
#include "core/status_fmt.h"

namespace tern {
namespace {

bool valid_file_name(const std::string& n) {
  if (n.empty() || n.size() > 128 || n == "." || n == ".." || n[0] == '.') return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '+' || c == '-')) return false;
  }
  return true;
}

absl::Status check_meta(const tern::v1::ArtifactMeta& meta_) {
  if (!is_valid_service_name(meta_.service())) {
    return absl::InvalidArgumentError(absl::StrCat("service \"", meta_.service(), "\" is not a service name"));
  }
  if (!is_valid_version(meta_.version())) {
    return absl::InvalidArgumentError(absl::StrCat("version \"", meta_.version(),
                                                   "\" must be 1-64 of letters, digits, '.', '_', '+', '-'"));
  }
  if (!meta_.sha256().empty() && !is_sha256_hex(meta_.sha256())) {
    return absl::InvalidArgumentError("sha256 must be 64 lower-case hex digits");
  }
  if (!meta_.kind().empty() && meta_.kind() != "executable" && meta_.kind() != "tar.gz") {
    return absl::InvalidArgumentError(absl::StrCat("kind \"", meta_.kind(), "\" must be executable or tar.gz"));
  }
  if (!meta_.signature().empty() && meta_.signature().size() != 64) {
    return absl::InvalidArgumentError("an ed25519 signature is 64 bytes");
  }
  if (!meta_.file_name().empty() && !valid_file_name(meta_.file_name())) {
    return absl::InvalidArgumentError(absl::StrCat("file name \"", meta_.file_name(), "\" must be a plain file name"));
  }
  return absl::OkStatus();
}

// Environment values are for whoever may change the spec: a viewer sees
// which variables a service sets, not their values (they may be secrets).
void redact_for(const tern::v1::Principal& who, tern::v1::ServiceSpec& spec) {
  if (who.role() == tern::v1::ROLE_ADMIN) return;
  for (auto& [key, value] : *spec.mutable_env()) value = "<redacted>";
}

// Reads one upload: metadata first, then the bytes, straight into the store.
class UploadReactor final : public grpc::ServerReadReactor<tern::v1::UploadArtifactRequest> {
 public:
  UploadReactor(EventLoop& loop, ServiceControl& control, ArtifactStore& store, uint64_t max_bytes, tern::v1::Artifact* resp)
      : loop_(loop), control_(control), store_(store), max_bytes_(max_bytes), resp_(resp) {
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) return complete();
    if (!have_meta_) {
      if (!req_.has_meta()) return fail(absl::InvalidArgumentError("the first upload message must carry the metadata"));
      meta_ = req_.meta();
      if (auto st = check_meta(meta_); !st.ok()) return fail(st);
      auto up = store_.begin();
      if (!up.ok()) return fail(up.status());
      upload_ = *std::move(up);
      have_meta_ = true;
    } else {
      if (!req_.has_data()) return fail(absl::InvalidArgumentError("metadata sent twice in one upload"));
      if (upload_->size() == 0 && req_.data().size() >= 2) {
        gzip_ = static_cast<unsigned char>(req_.data()[0]) == 0x1f && static_cast<unsigned char>(req_.data()[1]) == 0x8b;
      }
      if (upload_->size() + req_.data().size() > max_bytes_) {
        return fail(absl::ResourceExhaustedError(
            absl::StrCat("artifact larger than the coordinator's limit of ", max_bytes_, " bytes")));
      }
      if (auto st = upload_->write(req_.data()); !st.ok()) return fail(st);
    }
    req_.Clear();
    StartRead(&req_);
  }

  void OnDone() override { delete this; }

 private:
  void complete() {
    if (!have_meta_) return fail(absl::InvalidArgumentError("empty upload: no metadata"));
    if (upload_->size() == 0) return fail(absl::InvalidArgumentError("empty upload: no bytes"));
    auto digest = store_.commit(*upload_, meta_.sha256());
    if (!digest.ok()) return fail(digest.status());
    tern::v1::Artifact a;
    a.set_service(meta_.service());
    a.set_version(meta_.version());
    a.set_sha256(*digest);
    a.set_size(upload_->size());
    a.set_kind(meta_.kind().empty() ? (gzip_ ? "tar.gz" : "executable") : meta_.kind());
    a.set_file_name(meta_.file_name().empty() ? meta_.service() : meta_.file_name());
    a.set_signature(meta_.signature());
    loop_.post([this, a, name = a.file_name()] {
      auto saved = control_.register_artifact(a, name);
      if (!saved.ok()) return fail(saved.status());
      *resp_ = *saved;
      Finish(grpc::Status::OK);
    });
  }

  void fail(const absl::Status& st) {
    spdlog::warn("artifact upload {} {} refused: {}", meta_.service(), meta_.version(), st.message());
    Finish(to_grpc(st));
  }

  EventLoop& loop_;
  ServiceControl& control_;
  ArtifactStore& store_;
  uint64_t max_bytes_;
  tern::v1::Artifact* resp_;
  tern::v1::UploadArtifactRequest req_;
  tern::v1::ArtifactMeta meta_;
  bool have_meta_ = false;
  bool gzip_ = false;
  std::unique_ptr<ArtifactStore::Upload> upload_;
};

}  // namespace

grpc::ServerUnaryReactor* ServiceServiceImpl::ApplyService(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::ApplyServiceRequest* req,
                                                           tern::v1::ApplyServiceResponse* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kApplyService, [this, req, resp]() -> absl::Status {
    tern::v1::ApplyServiceRequest r = *req;
    apply_service_defaults(*r.mutable_spec());
    if (auto st = validate_service_spec(r.spec()); !st.ok()) return st;
    return reply(control_.apply_service(r), resp);
  });
}

grpc::ServerUnaryReactor* ServiceServiceImpl::GetService(grpc::CallbackServerContext* ctx,
                                                         const tern::v1::GetServiceRequest* req,
                                                         tern::v1::ServiceRecord* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kGetService, [this, req, resp](const tern::v1::Principal& who) {
    auto st = reply(control_.get_service(req->name()), resp);
    if (st.ok()) redact_for(who, *resp->mutable_spec());
    return st;
  });
}

grpc::ServerUnaryReactor* ServiceServiceImpl::ListServices(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::ListServicesRequest*,
                                                           tern::v1::ListServicesResponse* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kListServices, [this, resp](const tern::v1::Principal& who) {
    for (auto& s : control_.list_services()) {
      redact_for(who, *s.mutable_spec());
      *resp->add_services() = std::move(s);
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ServiceServiceImpl::DeleteService(grpc::CallbackServerContext* ctx,
                                                            const tern::v1::DeleteServiceRequest* req,
                                                            tern::v1::DeleteServiceResponse*) {
  return serve_unary(ctx, auth_, loop_, Rpc::kDeleteService,
                     [this, req] { return control_.delete_service(req->name()); });
}

grpc::ServerReadReactor<tern::v1::UploadArtifactRequest>* ServiceServiceImpl::UploadArtifact(
    grpc::CallbackServerContext* ctx, tern::v1::Artifact* resp) {
  if (auto p = auth_.authorize(*ctx, Rpc::kUploadArtifact); !p.ok()) {
    return new RefusedReader<tern::v1::UploadArtifactRequest>(to_grpc(p.status()));
  }
  return new UploadReactor(loop_, control_, artifacts_, max_artifact_bytes_, resp);
}

grpc::ServerUnaryReactor* ServiceServiceImpl::ListArtifacts(grpc::CallbackServerContext* ctx,
                                                            const tern::v1::ListArtifactsRequest* req,
                                                            tern::v1::ListArtifactsResponse* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kListArtifacts, [this, req, resp]() -> absl::Status {
    auto out = control_.list_artifacts(req->service());
    if (!out.ok()) return out.status();
    for (auto& a : *out) *resp->add_artifacts() = std::move(a);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ServiceServiceImpl::RegisterArtifact(grpc::CallbackServerContext* ctx,
                                                               const tern::v1::RegisterArtifactRequest* req,
                                                               tern::v1::Artifact* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kRegisterArtifact, [this, req, resp]() -> absl::Status {
    const std::string& url = req->url();
    const bool http = url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0;
    if (!http || url.size() > 2048 ||
        std::any_of(url.begin(), url.end(), [](char c) { return static_cast<unsigned char>(c) <= ' '; })) {
      return absl::InvalidArgumentError(
          absl::StrCat("url must be an http:// or https:// URL of at most 2048 characters without spaces"));
    }
    if (req->sha256().empty()) {
      return absl::InvalidArgumentError("give the sha256 of the file at the URL: agents refuse any other bytes");
    }
    tern::v1::ArtifactMeta meta;
    meta.set_service(req->service());
    meta.set_version(req->version());
    meta.set_sha256(req->sha256());
    meta.set_kind(req->kind());
    meta.set_signature(req->signature());
    std::string name = req->file_name();
    if (name.empty()) {
      name = url.substr(url.find_last_of('/') + 1);
      name = name.substr(0, name.find_first_of("?#"));
      if (name.empty() || name[0] == '.') name = req->service();
    }
    meta.set_file_name(name);
    if (auto st = check_meta(meta); !st.ok()) return st;
    tern::v1::Artifact a;
    a.set_service(meta.service());
    a.set_version(meta.version());
    a.set_sha256(meta.sha256());
    a.set_kind(meta.kind());
    a.set_signature(meta.signature());
    a.set_url(url);
    return reply(control_.register_artifact(a, meta.kind() == "tar.gz" ? "" : name), resp);
  });
}

}  // namespace tern
