#include "core/yaml_config.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/duration.h"

namespace tern {
namespace {

std::string position(const std::string& origin, const YAML::Mark& mark) {
  if (mark.is_null()) return origin;
  return absl::StrCat(origin, ":", mark.line + 1, ":", mark.column + 1);
}

}  // namespace

absl::StatusOr<YAML::Node> load_yaml_string(const std::string& text, const std::string& origin) {
  try {
    YAML::Node node = YAML::Load(text);
    if (!node.IsDefined() || node.IsNull()) return YAML::Node(YAML::NodeType::Map);
    if (!node.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(position(origin, node.Mark()), ": expected a mapping of keys to values at the top level"));
    }
    return node;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(position(origin, e.mark), ": not valid YAML: ", e.msg));
  }
}

absl::StatusOr<YAML::Node> load_yaml_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": config file not found"));
  }
  std::ifstream in(path);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open config file for reading"));
  std::stringstream buf;
  buf << in.rdbuf();
  return load_yaml_string(buf.str(), path);
}

YamlMap::YamlMap(const YAML::Node& node, std::string origin, std::string path)
    : node_(node), origin_(std::move(origin)), path_(std::move(path)) {
  if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap()) {
    status_ = absl::InvalidArgumentError(absl::StrCat(
        position(origin_, node_.Mark()), ": ", path_.empty() ? "document" : absl::StrCat("key ", path_),
        ": expected a mapping"));
  }
}

std::string YamlMap::key_path(absl::string_view key) const {
  return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", key);
}

absl::Status YamlMap::error_at(const YAML::Node& node, absl::string_view key, absl::string_view reason) const {
  return absl::InvalidArgumentError(
      absl::StrCat(position(origin_, node.Mark()), ": key \"", key_path(key), "\": ", reason));
}

void YamlMap::fail(absl::Status st) {
  if (status_.ok()) status_ = std::move(st);
}

void YamlMap::absorb(absl::Status child_status) { fail(std::move(child_status)); }

bool YamlMap::has(absl::string_view key) const {
  return node_.IsMap() && node_[std::string(key)].IsDefined();
}

std::optional<YAML::Node> YamlMap::lookup(absl::string_view key) {
  known_.emplace(key);
  if (!node_.IsMap()) return std::nullopt;
  YAML::Node v = node_[std::string(key)];
  if (!v.IsDefined() || v.IsNull()) return std::nullopt;
  return v;
}

void YamlMap::get(absl::string_view key, std::string& out) {
  auto v = lookup(key);
  if (!v) return;
  if (!v->IsScalar()) return fail(error_at(*v, key, "expected a string"));
  out = v->Scalar();
}

void YamlMap::get(absl::string_view key, bool& out) {
  auto v = lookup(key);
  if (!v) return;
  bool b;
  if (!v->IsScalar() || !YAML::convert<bool>::decode(*v, b)) {
    return fail(error_at(*v, key, "expected true or false"));
  }
  out = b;
}

void YamlMap::get(absl::string_view key, int64_t& out) {
  auto v = lookup(key);
  if (!v) return;
  long long n;
  if (!v->IsScalar() || !YAML::convert<long long>::decode(*v, n)) {
    return fail(error_at(*v, key, absl::StrCat("expected an integer, got \"", v->IsScalar() ? v->Scalar() : "a collection", "\"")));
  }
  out = n;
}

void YamlMap::get(absl::string_view key, uint32_t& out) {
  auto v = lookup(key);
  if (!v) return;
  long long n;
  if (!v->IsScalar() || !YAML::convert<long long>::decode(*v, n) || n < 0 ||
      n > std::numeric_limits<uint32_t>::max()) {
    return fail(error_at(*v, key, absl::StrCat("expected a non-negative integer, got \"", v->IsScalar() ? v->Scalar() : "a collection", "\"")));
  }
  out = static_cast<uint32_t>(n);
}

void YamlMap::get(absl::string_view key, Millis& out) {
  auto v = lookup(key);
  if (!v) return;
  if (!v->IsScalar()) return fail(error_at(*v, key, "expected a duration such as 5s"));
  auto d = parse_duration(v->Scalar());
  if (!d.ok()) return fail(error_at(*v, key, d.status().message()));
  out = *d;
}

void YamlMap::get(absl::string_view key, std::map<std::string, std::string>& out) {
  auto v = lookup(key);
  if (!v) return;
  if (!v->IsMap()) return fail(error_at(*v, key, "expected a mapping of names to strings"));
  std::map<std::string, std::string> result;
  for (const auto& kv : *v) {
    if (!kv.first.IsScalar() || !kv.second.IsScalar()) {
      return fail(error_at(kv.first, key, "expected every entry to be name: string"));
    }
    result[kv.first.Scalar()] = kv.second.Scalar();
  }
  out = std::move(result);
}

void YamlMap::get(absl::string_view key, std::vector<std::string>& out) {
  auto v = lookup(key);
  if (!v) return;
  if (!v->IsSequence()) return fail(error_at(*v, key, "expected a list of strings"));
  std::vector<std::string> result;
  for (const auto& item : *v) {
    if (!item.IsScalar()) return fail(error_at(item, key, "expected every item to be a string"));
    result.push_back(item.Scalar());
  }
  out = std::move(result);
}

std::optional<YamlMap> YamlMap::child(absl::string_view key) {
  auto v = lookup(key);
  if (!v) return std::nullopt;
  if (!v->IsMap()) {
    fail(error_at(*v, key, "expected a mapping"));
    return std::nullopt;
  }
  return YamlMap(*v, origin_, key_path(key));
}

std::vector<YamlMap> YamlMap::children(absl::string_view key) {
  std::vector<YamlMap> out;
  auto v = lookup(key);
  if (!v) return out;
  if (!v->IsSequence()) {
    fail(error_at(*v, key, "expected a list of mappings"));
    return out;
  }
  for (std::size_t i = 0; i < v->size(); ++i) {
    const YAML::Node item = (*v)[i];
    if (!item.IsMap()) {
      fail(error_at(item, absl::StrCat(key, "[", i, "]"), "expected a mapping"));
      return {};
    }
    out.emplace_back(item, origin_, key_path(absl::StrCat(key, "[", i, "]")));
  }
  return out;
}

absl::Status YamlMap::finish() {
  if (!status_.ok()) return status_;
  if (!node_.IsMap()) return absl::OkStatus();
  for (const auto& kv : node_) {
    const std::string name = kv.first.Scalar();
    if (known_.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          position(origin_, kv.first.Mark()), ": unknown key \"", key_path(name), "\" (known keys: ",
          absl::StrJoin(known_, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace tern
