// ternctl service ... and ternctl artifact ...: service specs, and the
// release artifacts the coordinator stores for them.
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fstream>
#include <iomanip>
#include <memory>
#include <sstream>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/clock.h"
#include "core/service_spec.h"
#include "core/sha256.h"
#include "core/signing.h"
#include "ctl/ctl_internal.h"
#include "ctl/table.h"
#include "tern/v1/service.grpc.pb.h"

namespace tern {
namespace {

using ServiceStub = tern::v1::ServiceService::Stub;

int cmd_service_apply(const CtlContext& c, const std::string& file) {
  auto spec = load_service_spec_file(file);
  if (!spec.ok()) return c.usage_error("service apply", spec.status().message());
  tern::v1::ApplyServiceRequest req;
  *req.mutable_spec() = *spec;
  auto print = [&](const tern::v1::ApplyServiceResponse& resp) {
    c.out << "service " << resp.service().spec().name() << (resp.changed() ? " applied" : " unchanged")
          << " (generation " << resp.service().generation() << ")\n";
  };
  return c.show(absl::StrCat("service apply ", spec->name()), &ServiceStub::ApplyService, req, print);
}

int cmd_service_get(const CtlContext& c, const std::string& name) {
  tern::v1::GetServiceRequest req;
  req.set_name(name);
  auto print = [&](const tern::v1::ServiceRecord& r) {
    c.out << "service " << r.spec().name() << ", generation " << r.generation() << ", updated "
          << ago(r.updated(), to_unix_millis(SystemClock::instance().now())) << "\n"
          << to_json(r.spec());
  };
  return c.show(absl::StrCat("service get ", name), &ServiceStub::GetService, req, print);
}

// What `service apply -f FILE` would change: exit 0 when nothing, 1 when
// something (as diff(1) does), the changed fields listed.
int cmd_service_diff(const CtlContext& c, const std::string& file) {
  auto spec = load_service_spec_file(file);
  if (!spec.ok()) return c.usage_error("service diff", spec.status().message());
  apply_service_defaults(*spec);
  tern::v1::GetServiceRequest req;
  req.set_name(spec->name());
  tern::v1::ServiceRecord stored;
  const grpc::Status st = c.unary(&ServiceStub::GetService, req, stored);
  if (st.error_code() == grpc::StatusCode::NOT_FOUND) {
    c.out << "service " << spec->name() << " is not stored yet: `ternctl service apply -f " << file
          << "` adds it\n";
    return kExitFailed;
  }
  if (!st.ok()) return c.rpc_error(absl::StrCat("service diff ", spec->name()), st);
  std::string report;
  bool same;
  {
    google::protobuf::io::StringOutputStream stream(&report);
    google::protobuf::util::MessageDifferencer::StreamReporter reporter(&stream);
    google::protobuf::util::MessageDifferencer differ;
    differ.ReportDifferencesTo(&reporter);
    same = differ.Compare(stored.spec(), *spec);
  }  // the reporter flushes into `report` here
  if (same) {
    c.out << "service " << spec->name() << ": " << file << " is what is stored (generation " << stored.generation()
          << ")\n";
    return kExitOk;
  }
  c.out << "service " << spec->name() << ": " << file << " differs from generation " << stored.generation()
        << " (stored -> file):\n"
        << report;
  return kExitFailed;
}

int cmd_service_delete(const CtlContext& c, const std::string& name, bool yes) {
  if (!yes && c.in != nullptr) {
    c.out << "delete service " << name << " from the coordinator? Hosts that run it are told to remove it. [y/N] "
          << std::flush;
    std::string answer;
    std::getline(*c.in, answer);
    if (answer != "y" && answer != "yes") {
      c.err << "ternctl: service delete " << name << ": not confirmed; nothing changed\n";
      return kExitFailed;
    }
  }
  tern::v1::DeleteServiceRequest req;
  req.set_name(name);
  auto print = [&](const tern::v1::DeleteServiceResponse&) { c.out << "service " << name << " deleted\n"; };
  return c.show(absl::StrCat("service delete ", name), &ServiceStub::DeleteService, req, print);
}

std::string ports_word(const tern::v1::ServiceSpec& spec) {
  std::vector<std::string> parts;
  for (const auto& p : spec.ports()) {
    parts.push_back(absl::StrCat(p.public_port(), "/", p.protocol(), "->", p.blue_port(), "|", p.green_port()));
  }
  return absl::StrJoin(parts, ",");
}

int cmd_service_list(const CtlContext& c) {
  auto print = [&](const tern::v1::ListServicesResponse& resp) {
    Table t({"SERVICE", "GENERATION", "SELECTOR", "PORTS (PUBLIC->BLUE|GREEN)", "KEEP WARM"});
    for (const auto& r : resp.services()) {
      t.add({r.spec().name(), std::to_string(r.generation()),
             r.spec().selector().empty() ? "(all)" : r.spec().selector(), ports_word(r.spec()),
             r.spec().keep_warm() ? "yes" : "no"});
    }
    t.print(c.out);
    if (resp.services().empty()) c.err << "no services yet; add one with `ternctl service apply -f SPEC.yaml`\n";
  };
  return c.show("list services", &ServiceStub::ListServices, tern::v1::ListServicesRequest(), print);
}

int cmd_artifact_push(const CtlContext& c, const std::string& file, const std::string& service,
                      const std::string& version, const std::string& kind, const std::string& name,
                      const std::string& sign_key) {
  // Hashed first, so the coordinator can check the bytes end to end.
  auto digest = sha256_file(file);
  if (!digest.ok()) return c.usage_error("artifact push", digest.status().message());
  std::string signature;
  if (!sign_key.empty()) {
    auto sig = sign_artifact(sign_key, *digest);
    if (!sig.ok()) return c.usage_error("artifact push: --sign-key", sig.status().message());
    signature = *std::move(sig);
  }
  std::ifstream in(file, std::ios::binary);
  in.seekg(0, std::ios::end);
  const uint64_t total = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  auto stub = tern::v1::ServiceService::NewStub(c.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::hours(1));
  tern::v1::Artifact resp;
  auto writer = stub->UploadArtifact(&ctx, &resp);
  tern::v1::UploadArtifactRequest req;
  auto* meta = req.mutable_meta();
  meta->set_service(service);
  meta->set_version(version);
  meta->set_sha256(*digest);
  meta->set_kind(kind);
  meta->set_signature(signature);
  std::string base = name.empty() ? file.substr(file.find_last_of('/') + 1) : name;
  if (kind != "tar.gz") meta->set_file_name(base);
  bool ok = writer->Write(req);
  std::string buf(64 * 1024, '\0');
  uint64_t sent = 0;
  int last_tenth = 0;
  while (ok && in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    req.Clear();
    req.set_data(buf.data(), n);
    ok = writer->Write(req);
    sent += n;
    const int tenth = total ? static_cast<int>(sent * 10 / total) : 10;
    if (total > (8u << 20) && tenth > last_tenth && !c.json) {
      c.err << "  uploaded " << human_bytes(sent) << " of " << human_bytes(total) << "\n";
      last_tenth = tenth;
    }
  }
  writer->WritesDone();
  grpc::Status st = writer->Finish();
  if (!st.ok()) return c.rpc_error(absl::StrCat("artifact push ", service, " ", version), st);
  if (c.json) {
    c.out << to_json(resp);
  } else {
    c.out << "pushed " << resp.service() << " " << resp.version() << " (" << resp.kind() << ", "
        << human_bytes(resp.size()) << ", sha256 " << resp.sha256().substr(0, 12) << ")\n";
  }
  return kExitOk;
}

int cmd_artifact_register(const CtlContext& c, const std::string& url, const std::string& sha256,
                          const std::string& service, const std::string& version, const std::string& kind,
                          const std::string& name, const std::string& sign_key) {
  tern::v1::RegisterArtifactRequest req;
  req.set_service(service);
  req.set_version(version);
  req.set_url(url);
  req.set_sha256(sha256);
  req.set_kind(kind);
  req.set_file_name(name);
  if (!sign_key.empty()) {
    auto sig = sign_artifact(sign_key, sha256);
    if (!sig.ok()) return c.usage_error("artifact register: --sign-key", sig.status().message());
    req.set_signature(*sig);
  }
  tern::v1::Artifact resp;
  const int rc = c.call(absl::StrCat("artifact register ", service, " ", version), &ServiceStub::RegisterArtifact,
                        req, resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(resp);
  } else {
    c.out << "registered " << resp.service() << " " << resp.version() << " at " << resp.url() << " (sha256 "
          << resp.sha256().substr(0, 12) << "); agents download it from there and refuse other bytes\n";
  }
  return kExitOk;
}

int cmd_artifact_list(const CtlContext& c, const std::string& service) {
  tern::v1::ListArtifactsRequest req;
  req.set_service(service);
  auto print = [&](const tern::v1::ListArtifactsResponse& resp) {
    const int64_t now = to_unix_millis(SystemClock::instance().now());
    Table t({"SERVICE", "VERSION", "KIND", "SIZE", "SHA256", "CREATED", "SOURCE"});
    for (const auto& a : resp.artifacts()) {
      t.add({a.service(), a.version(), a.kind().empty() ? "-" : a.kind(),
             a.url().empty() ? human_bytes(a.size()) : "-", a.sha256().substr(0, 12), ago(a.created(), now),
             a.url().empty() ? "store" : a.url()});
    }
    t.print(c.out);
  };
  return c.show("list artifacts", &ServiceStub::ListArtifacts, req, print);
}

}  // namespace

void add_service_commands(CLI::App& app, CtlCommands& cmds) {
  struct Args {
    std::string spec_file;
    std::string file, service, version, kind, name, sign_key, url, sha256;
    bool yes = false;
  };
  auto a = std::make_shared<Args>();
  auto* service = app.add_subcommand("service", "apply, list, get, diff and delete service specs");
  service->require_subcommand(1);
  auto* apply = service->add_subcommand("apply", "validate a service spec and store it; agents get it");
  apply->add_option("-f,--file", a->spec_file, "service spec YAML")->required();
  auto* list = service->add_subcommand("list", "list services");
  auto* get = service->add_subcommand("get", "a service's stored spec, as the coordinator holds it");
  get->add_option("name", a->service, "the service")->required();
  auto* diff = service->add_subcommand("diff", "what `service apply` would change (exit 1 when anything)");
  diff->add_option("-f,--file", a->spec_file, "service spec YAML")->required();
  auto* del = service->add_subcommand("delete", "forget a service (admin); hosts that run it remove it");
  del->add_option("name", a->service, "the service")->required();
  del->add_flag("-y,--yes", a->yes, "do not ask, on a terminal");
  cmds.push_back({apply, [a](const CtlContext& c) { return cmd_service_apply(c, a->spec_file); }});
  cmds.push_back({get, [a](const CtlContext& c) { return cmd_service_get(c, a->service); }});
  cmds.push_back({diff, [a](const CtlContext& c) { return cmd_service_diff(c, a->spec_file); }});
  cmds.push_back({del, [a](const CtlContext& c) { return cmd_service_delete(c, a->service, a->yes); }});
  cmds.push_back({list, [](const CtlContext& c) { return cmd_service_list(c); }});

  auto* artifact = app.add_subcommand("artifact", "upload and list release artifacts");
  artifact->require_subcommand(1);
  auto* push = artifact->add_subcommand("push", "upload an executable or a .tar.gz bundle as a version");
  push->add_option("file", a->file, "the file to upload")->required();
  push->add_option("--service", a->service, "the service it belongs to")->required();
  push->add_option("--version", a->version, "the version it is")->required();
  push->add_option("--kind", a->kind, "executable or tar.gz (default: told apart by content)")
      ->check(CLI::IsMember({"executable", "tar.gz"}));
  push->add_option("--name", a->name, "file name of an executable in the release dir (default: its own)");
  push->add_option("--sign-key", a->sign_key,
                   "sign it with this ed25519 private key (PEM); agents with trusted_keys require it");
  auto* reg = artifact->add_subcommand(
      "register", "record a release that lives at an http(s) URL as a version (admin); agents download it");
  reg->add_option("--url", a->url, "where agents download it (http:// or https://)")->required();
  reg->add_option("--sha256", a->sha256, "sha256 of the file at the URL; agents refuse other bytes")->required();
  reg->add_option("--service", a->service, "the service it belongs to")->required();
  reg->add_option("--version", a->version, "the version it is")->required();
  reg->add_option("--kind", a->kind, "executable or tar.gz (default: told apart by content)")
      ->check(CLI::IsMember({"executable", "tar.gz"}));
  reg->add_option("--name", a->name, "file name of an executable in the release dir (default: the URL's)");
  reg->add_option("--sign-key", a->sign_key,
                  "sign it with this ed25519 private key (PEM); agents with trusted_keys require it");
  cmds.push_back({reg, [a](const CtlContext& c) {
                    return cmd_artifact_register(c, a->url, a->sha256, a->service, a->version, a->kind, a->name,
                                                 a->sign_key);
                  }});
  auto* artifacts = artifact->add_subcommand("list", "list artifacts");
  artifacts->add_option("--service", a->service, "only this service's");
  cmds.push_back({push, [a](const CtlContext& c) {
                    return cmd_artifact_push(c, a->file, a->service, a->version, a->kind, a->name, a->sign_key);
                  }});
  cmds.push_back({artifacts, [a](const CtlContext& c) { return cmd_artifact_list(c, a->service); }});
}

}  // namespace tern
