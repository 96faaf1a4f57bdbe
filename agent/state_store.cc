#include "agent/state_store.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace tern {

StateStore::StateStore(std::string dir) : dir_(std::move(dir)), path_(dir_ + "/agent-state.json") {}

absl::StatusOr<tern::v1::AgentState> StateStore::load() const {
  tern::v1::AgentState state;
  std::ifstream in(path_);
  if (!in) {
    if (::access(path_.c_str(), F_OK) != 0) return state;
    return absl::FailedPreconditionError(absl::StrCat("cannot read ", path_, ": ", std::strerror(errno)));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;  // a newer agent's file after a downgrade
  auto st = google::protobuf::util::JsonStringToMessage(buf.str(), &state, opts);
  if (!st.ok()) {
    return absl::DataLossError(absl::StrCat(path_, " is not a valid agent state file (", st.ToString(),
                                            "); move it aside to start from scratch"));
  }
  return state;
}

absl::Status StateStore::save(const tern::v1::AgentState& state) {
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  if (auto st = google::protobuf::util::MessageToJsonString(state, &json, opts); !st.ok()) {
    return absl::InternalError(absl::StrCat("cannot encode agent state: ", st.ToString()));
  }
  const std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  std::size_t off = 0;
  while (off < json.size()) {
    ssize_t n = ::write(fd, json.data() + off, json.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(e)));
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot fsync ", tmp, ": ", std::strerror(e)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path_, ": ", std::strerror(errno)));
  }
  int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace tern
