#include "core/yaml_config.h"

#include <yaml-cpp/eventhandler.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "core/duration.h"
#include "core/text.h"

namespace tern {
namespace {

std::string position(const std::string& origin, const YAML::Mark& mark) {
  if (mark.is_null()) return origin;
  return absl::StrCat(origin, ":", mark.line + 1, ":", mark.column + 1);
}

// Thrown out of YamlShapeCheck to stop the parse at the first refusal.
struct YamlRefusal {
  YAML::Mark mark;
  std::string reason;
};

// Walks the parser's events before any node is built and refuses what a tern
// file never needs but an attacker can use: anchors and aliases (a few
// hundred bytes of nested aliases expand to billions of nodes for whoever
// walks or re-emits the tree), nesting deeper than kMaxYamlDepth, and the
// same key twice in one mapping (yaml-cpp would silently use one of them).
class YamlShapeCheck final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override { node(mark, anchor, nullptr); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    throw YamlRefusal{mark, "aliases (*name) are not allowed in tern files; write the value out in full"};
  }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, const std::string& value) override {
    if (!is_utf8(value)) {
      throw YamlRefusal{mark, "this value is not valid UTF-8; tern files are UTF-8 text (re-save the file as UTF-8)"};
    }
    if (value.find('\0') != std::string::npos) {
      throw YamlRefusal{mark, "this value contains a NUL character (\\0), which no tern setting accepts"};
    }
    node(mark, anchor, &value);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    node(mark, anchor, nullptr);
    open(mark, /*is_map=*/false);
  }
  void OnSequenceEnd() override { frames_.pop_back(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    node(mark, anchor, nullptr);
    open(mark, /*is_map=*/true);
  }
  void OnMapEnd() override { frames_.pop_back(); }
  void OnAnchor(const YAML::Mark& mark, const std::string&) override { anchor_refused(mark); }

 private:
  struct Frame {
    bool is_map;
    bool expect_key = true;
    std::set<std::string> keys;
  };

  [[noreturn]] static void anchor_refused(const YAML::Mark& mark) {
    throw YamlRefusal{mark, "anchors (&name) and aliases (*name) are not allowed in tern files; write the value out in full"};
  }

  // Every node, scalar or collection, in document order. Inside a mapping
  // nodes alternate key, value.
  void node(const YAML::Mark& mark, YAML::anchor_t anchor, const std::string* scalar) {
    if (anchor != YAML::NullAnchor) anchor_refused(mark);
    if (frames_.empty() || !frames_.back().is_map) return;
    Frame& f = frames_.back();
    if (f.expect_key && scalar != nullptr && !f.keys.insert(*scalar).second) {
      throw YamlRefusal{mark, absl::StrCat("key \"", *scalar, "\" appears twice in the same mapping; keep one")};
    }
    f.expect_key = !f.expect_key;
  }

  void open(const YAML::Mark& mark, bool is_map) {
    if (frames_.size() >= kMaxYamlDepth) {
      throw YamlRefusal{mark, absl::StrCat("nested deeper than ", kMaxYamlDepth, " levels; tern files never need that")};
    }
    frames_.push_back(Frame{is_map, true, {}});
  }

  std::vector<Frame> frames_;
};

}  // namespace

absl::StatusOr<YAML::Node> load_yaml_string(const std::string& text, const std::string& origin) {
  if (text.size() > kMaxYamlBytes) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": the file is ", text.size(),
                                                   " bytes; tern files are at most ", kMaxYamlBytes, " bytes"));
  }
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    YamlShapeCheck check;
    if (parser.HandleNextDocument(check) && parser.HandleNextDocument(check)) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": holds more than one YAML document (a second \"---\"); a tern file is one document"));
    }
  } catch (const YamlRefusal& r) {
    return absl::InvalidArgumentError(absl::StrCat(position(origin, r.mark), ": ", r.reason));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(position(origin, e.mark), ": not valid YAML: ", e.msg));
  }
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
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open config file for reading"));
  // Read one byte past the limit, never more: the path may name something
  // endless (a fifo, /dev/zero).
  std::string text(kMaxYamlBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot read config file"));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxYamlBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the file is larger than ", kMaxYamlBytes, " bytes, the limit for tern files"));
  }
  return load_yaml_string(text, path);
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

void YamlMap::get(absl::string_view key, double& out) {
  auto v = lookup(key);
  if (!v) return;
  std::string text = v->IsScalar() ? v->Scalar() : "";
  const bool percent = !text.empty() && text.back() == '%';
  if (percent) text.pop_back();
  double d = 0;
  if (!v->IsScalar() || text.empty() || text.size() > 32 || !absl::SimpleAtod(text, &d) || !std::isfinite(d)) {
    return fail(error_at(*v, key, absl::StrCat("expected a number such as 1.5 or a percentage such as 0.1%, got \"",
                                               v->IsScalar() ? v->Scalar() : "a collection", "\"")));
  }
  out = percent ? d / 100 : d;
}

void YamlMap::get(absl::string_view key, Millis& out) {
  auto v = lookup(key);
  if (!v) return;
  if (!v->IsScalar()) return fail(error_at(*v, key, "expected a duration such as 5s"));
  // No real duration is this long to write; a longer one can overflow while
  // it is summed up.
  if (v->Scalar().size() > 32) {
    return fail(error_at(*v, key, "expected a duration such as 5s, 1m30s or 2h (at most 32 characters)"));
  }
  auto d = parse_duration(v->Scalar());
  if (!d.ok()) return fail(error_at(*v, key, d.status().message()));
  // Also keeps it far inside what a protobuf Duration can hold.
  if (*d > kMaxYamlDuration) {
    return fail(error_at(*v, key, absl::StrCat("\"", v->Scalar(), "\" is longer than ",
                                               kMaxYamlDuration.count() / 3'600'000, "h, the longest duration a tern "
                                               "file may give")));
  }
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
