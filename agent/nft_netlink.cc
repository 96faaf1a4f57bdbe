#include "agent/nft_netlink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"

namespace tern {
namespace {

// The NLMSG_*/NLA_* macros contain C-style casts, which -Wold-style-cast
// rejects; these are their typed equivalents.
constexpr size_t align4(size_t n) { return (n + 3) & ~size_t{3}; }
constexpr size_t kMsgHeaderLen = align4(sizeof(nlmsghdr));
constexpr size_t kAttrHeaderLen = align4(sizeof(nlattr));
constexpr size_t kGenMsgLen = align4(sizeof(nfgenmsg));

constexpr uint16_t nft_type(int msg) { return static_cast<uint16_t>((NFNL_SUBSYS_NFTABLES << 8) | msg); }

// How long one call waits for the kernel's answer. The kernel answers while
// processing sendmsg(), so this only matters if something is badly wrong.
constexpr int kReceiveTimeoutSeconds = 5;

// Netlink messages are built into a flat buffer; headers are written with
// memcpy, so nothing depends on the buffer's alignment.
class MessageBuilder {
 public:
  size_t begin_message(uint16_t type, uint16_t flags, uint32_t seq, uint8_t family, uint16_t res_id) {
    size_t start = buf_.size();
    nlmsghdr hdr{};
    hdr.nlmsg_type = type;
    hdr.nlmsg_flags = flags;
    hdr.nlmsg_seq = seq;
    append(&hdr, sizeof hdr);
    pad();
    nfgenmsg gen{};
    gen.nfgen_family = family;
    gen.version = NFNETLINK_V0;
    gen.res_id = htons(res_id);
    append(&gen, sizeof gen);
    pad();
    return start;
  }
  void end_message(size_t start) { patch_u32(start, static_cast<uint32_t>(buf_.size() - start)); }

  void put_attr(uint16_t type, const void* data, size_t len) {
    nlattr attr{};
    attr.nla_len = static_cast<uint16_t>(kAttrHeaderLen + len);
    attr.nla_type = type;
    append(&attr, sizeof attr);
    pad();
    append(data, len);
    pad();
  }
  void put_string(uint16_t type, const std::string& s) { put_attr(type, s.c_str(), s.size() + 1); }

  size_t begin_nest(uint16_t type) {
    size_t start = buf_.size();
    nlattr attr{};
    attr.nla_type = static_cast<uint16_t>(type | NLA_F_NESTED);
    append(&attr, sizeof attr);
    pad();
    return start;
  }
  void end_nest(size_t start) {
    uint16_t len = static_cast<uint16_t>(buf_.size() - start);
    std::memcpy(buf_.data() + start, &len, sizeof len);
  }

  const std::vector<uint8_t>& bytes() const { return buf_; }
  size_t size() const { return buf_.size(); }

 private:
  void append(const void* data, size_t len) {
    const auto* p = static_cast<const uint8_t*>(data);
    buf_.insert(buf_.end(), p, p + len);
  }
  void pad() { buf_.resize(align4(buf_.size()), 0); }
  void patch_u32(size_t at, uint32_t v) { std::memcpy(buf_.data() + at, &v, sizeof v); }

  std::vector<uint8_t> buf_;
};

// Walks the netlink messages of one datagram.
class MessageReader {
 public:
  MessageReader(const uint8_t* data, size_t len) : data_(data), len_(len) {}
  // Copies the next header out and points `payload` at its body.
  bool next(nlmsghdr& hdr, const uint8_t*& payload, size_t& payload_len) {
    if (off_ + sizeof(nlmsghdr) > len_) return false;
    std::memcpy(&hdr, data_ + off_, sizeof hdr);
    if (hdr.nlmsg_len < sizeof(nlmsghdr) || off_ + hdr.nlmsg_len > len_) return false;
    payload = data_ + off_ + kMsgHeaderLen;
    payload_len = hdr.nlmsg_len > kMsgHeaderLen ? hdr.nlmsg_len - kMsgHeaderLen : 0;
    off_ += align4(hdr.nlmsg_len);
    return true;
  }

 private:
  const uint8_t* data_;
  size_t len_;
  size_t off_ = 0;
};

absl::Status errno_status(int err, const std::string& what) {
  return absl::Status(absl::ErrnoToStatusCode(err), absl::StrCat(what, ": ", std::strerror(err), " (errno ", err, ")"));
}

// Receives one datagram from the kernel. Returns its length, 0 when
// non-blocking and nothing is queued.
absl::StatusOr<size_t> receive(int fd, std::vector<uint8_t>& buf, bool nonblocking) {
  for (;;) {
    sockaddr_nl from{};
    socklen_t from_len = sizeof from;
    ssize_t n = recvfrom(fd, buf.data(), buf.size(), MSG_TRUNC | (nonblocking ? MSG_DONTWAIT : 0),
                         reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (nonblocking) return size_t{0};
        return absl::DeadlineExceededError(
            absl::StrCat("no answer from the kernel's nf_tables within ", kReceiveTimeoutSeconds, " s"));
      }
      return errno_status(errno, "receiving from the nf_tables netlink socket");
    }
    if (from.nl_pid != 0) continue;  // not from the kernel
    if (static_cast<size_t>(n) > buf.size()) {
      return absl::InternalError(absl::StrCat("nf_tables netlink message of ", n, " bytes truncated to ", buf.size()));
    }
    return static_cast<size_t>(n);
  }
}

// Calls f(type, data, len) for each attribute in [data, data + len).
template <typename F>
void for_each_attr(const uint8_t* data, size_t len, F&& f) {
  for (size_t off = 0; off + sizeof(nlattr) <= len;) {
    nlattr attr;
    std::memcpy(&attr, data + off, sizeof attr);
    if (attr.nla_len < sizeof(nlattr) || off + attr.nla_len > len) return;
    f(static_cast<uint16_t>(attr.nla_type & NLA_TYPE_MASK), data + off + kAttrHeaderLen,
      static_cast<size_t>(attr.nla_len) - kAttrHeaderLen);
    off += align4(attr.nla_len);
  }
}

uint64_t be64_value(const uint8_t* data) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | data[i];
  return v;
}

// The errno of an NLMSG_ERROR message (0 for an ack).
int error_code(const uint8_t* payload, size_t len) {
  if (len < sizeof(int)) return EPROTO;
  int err = 0;
  std::memcpy(&err, payload, sizeof err);
  return -err;
}

// Receives until `on_reply`, given each message answering `seq` (its header,
// payload and payload length), returns true. Messages of other sequence
// numbers (late answers to earlier calls) are skipped.
absl::Status read_replies(int fd, uint32_t seq,
                          const std::function<bool(const nlmsghdr&, const uint8_t*, size_t)>& on_reply) {
  std::vector<uint8_t> buf(65536);
  for (;;) {
    auto n = receive(fd, buf, /*nonblocking=*/false);
    if (!n.ok()) return n.status();
    MessageReader reader(buf.data(), *n);
    nlmsghdr hdr;
    const uint8_t* payload = nullptr;
    size_t len = 0;
    while (reader.next(hdr, payload, len)) {
      if (hdr.nlmsg_seq == seq && on_reply(hdr, payload, len)) return absl::OkStatus();
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<NftNetlink>> NftNetlink::open() {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) {
    int e = errno;
    std::string msg = absl::StrCat("cannot open a NETLINK_NETFILTER socket: ", std::strerror(e));
    if (e == EPROTONOSUPPORT || e == EAFNOSUPPORT) {
      return absl::FailedPreconditionError(
          absl::StrCat(msg, "; this kernel has no nfnetlink (nf_tables); use the iptables backend"));
    }
    if (e == EPERM || e == EACCES) return absl::PermissionDeniedError(absl::StrCat(msg, "; run as root"));
    return absl::InternalError(msg);
  }
  std::unique_ptr<NftNetlink> nl(new NftNetlink(fd));
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    return errno_status(errno, "binding the NETLINK_NETFILTER socket");
  }
  // Error acks carry only the failed message's header, not the whole batch.
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  timeval tv{};
  tv.tv_sec = kReceiveTimeoutSeconds;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
    return errno_status(errno, "setting SO_RCVTIMEO on the NETLINK_NETFILTER socket");
  }
  int size = 0;
  socklen_t size_len = sizeof size;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &size_len) == 0) nl->sndbuf_ = static_cast<size_t>(size);
  size_len = sizeof size;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, &size_len) == 0) nl->rcvbuf_ = static_cast<size_t>(size);
  return nl;
}

NftNetlink::~NftNetlink() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status NftNetlink::send_buffer(const std::vector<uint8_t>& buf) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  for (;;) {
    ssize_t n = sendto(fd_, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
    if (n >= 0) {
      if (static_cast<size_t>(n) != buf.size()) {
        return absl::InternalError(absl::StrCat("short netlink send: ", n, " of ", buf.size(), " bytes"));
      }
      return absl::OkStatus();
    }
    if (errno == EINTR) continue;
    return errno_status(errno, "sending to nf_tables");
  }
}

void NftNetlink::ensure_buffers(size_t send_bytes, size_t ack_count) {
  // The kernel doubles the value set and keeps some for bookkeeping; ask for
  // twice what is needed. The *FORCE variants pass net.core.*mem_max (root).
  auto grow = [this](int force_opt, int opt, size_t want, size_t& have) {
    if (want <= have) return;
    int v = static_cast<int>(want);
    if (setsockopt(fd_, SOL_SOCKET, force_opt, &v, sizeof v) != 0) setsockopt(fd_, SOL_SOCKET, opt, &v, sizeof v);
    int got = 0;
    socklen_t len = sizeof got;
    if (getsockopt(fd_, SOL_SOCKET, opt, &got, &len) == 0) have = static_cast<size_t>(got);
  };
  grow(SO_SNDBUFFORCE, SO_SNDBUF, 2 * send_bytes + 4096, sndbuf_);
  // Each ack costs about 1 KiB of receive buffer (skb overhead included).
  grow(SO_RCVBUFFORCE, SO_RCVBUF, 1024 * ack_count + 65536, rcvbuf_);
}

void NftNetlink::drain_nonblocking() {
  std::vector<uint8_t> buf(65536);
  for (;;) {
    auto n = receive(fd_, buf, /*nonblocking=*/true);
    if (!n.ok() || *n == 0) return;
  }
}

absl::StatusOr<uint32_t> NftNetlink::get_generation() {
  MessageBuilder b;
  uint32_t seq = seq_++;
  size_t msg = b.begin_message(nft_type(NFT_MSG_GETGEN), NLM_F_REQUEST, seq, AF_UNSPEC, 0);
  b.end_message(msg);
  if (auto st = send_buffer(b.bytes()); !st.ok()) return st;

  absl::StatusOr<uint32_t> out = absl::InternalError("the kernel's answer to NFT_MSG_GETGEN has no NFTA_GEN_ID");
  auto st = read_replies(fd_, seq, [&](const nlmsghdr& hdr, const uint8_t* payload, size_t len) {
    if (hdr.nlmsg_type == NLMSG_ERROR) {
      out = errno_status(error_code(payload, len), "reading the nf_tables generation");
      return true;
    }
    if (hdr.nlmsg_type != nft_type(NFT_MSG_NEWGEN) || len < kGenMsgLen) return false;
    for_each_attr(payload + kGenMsgLen, len - kGenMsgLen, [&](uint16_t type, const uint8_t* data, size_t l) {
      if (type != NFTA_GEN_ID || l < sizeof(uint32_t)) return;
      uint32_t v = 0;
      std::memcpy(&v, data, sizeof v);
      out = ntohl(v);
    });
    return true;
  });
  if (!st.ok()) return st;
  return out;
}

absl::Status NftNetlink::replace_map_elements(uint8_t family, const std::string& table,
                                              const std::vector<NftMapContents>& maps) {
  if (maps.empty()) return absl::OkStatus();
  // Keep the batch's sequence numbers in one unwrapped range.
  if (seq_ > 0xf0000000u) seq_ = 1;
  MessageBuilder b;
  // What each message did, by sequence number, for the error message.
  std::map<uint32_t, std::string> pending;

  uint32_t begin_seq = seq_++;
  size_t msg = b.begin_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, begin_seq, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  b.end_message(msg);

  for (const auto& m : maps) {
    const std::string where = absl::StrCat("map ", table, "/", m.map);
    // NFT_MSG_DELSETELEM without NFTA_SET_ELEM_LIST_ELEMENTS flushes the set.
    uint32_t seq = seq_++;
    msg = b.begin_message(nft_type(NFT_MSG_DELSETELEM), NLM_F_REQUEST | NLM_F_ACK, seq, family, 0);
    b.put_string(NFTA_SET_ELEM_LIST_TABLE, table);
    b.put_string(NFTA_SET_ELEM_LIST_SET, m.map);
    b.end_message(msg);
    pending[seq] = absl::StrCat("flushing ", where);

    if (m.elements.empty()) continue;
    seq = seq_++;
    msg = b.begin_message(nft_type(NFT_MSG_NEWSETELEM), NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK, seq, family, 0);
    b.put_string(NFTA_SET_ELEM_LIST_TABLE, table);
    b.put_string(NFTA_SET_ELEM_LIST_SET, m.map);
    size_t list = b.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (const auto& [key, port] : m.elements) {
      size_t elem = b.begin_nest(NFTA_LIST_ELEM);
      size_t k = b.begin_nest(NFTA_SET_ELEM_KEY);
      b.put_attr(NFTA_DATA_VALUE, &key, sizeof key);  // host byte order, as numgen writes it
      b.end_nest(k);
      size_t d = b.begin_nest(NFTA_SET_ELEM_DATA);
      uint16_t be_port = htons(port);
      b.put_attr(NFTA_DATA_VALUE, &be_port, sizeof be_port);
      b.end_nest(d);
      b.end_nest(elem);
    }
    b.end_nest(list);
    b.end_message(msg);
    pending[seq] = absl::StrCat("adding ", m.elements.size(), " elements to ", where);
  }

  uint32_t end_seq = seq_++;
  msg = b.begin_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, end_seq, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
  b.end_message(msg);
  if (b.size() > 0xffffffffu) return absl::InvalidArgumentError("nf_tables batch too large");

  ensure_buffers(b.size(), pending.size());
  if (auto st = send_buffer(b.bytes()); !st.ok()) {
    return absl::Status(st.code(),
                        absl::StrCat("updating ", maps.size(), " maps in table ", table, ": ", st.message()));
  }

  // The kernel processes the whole batch inside sendmsg() and queues one ack
  // per message (errors included) before it returns.
  std::vector<uint8_t> buf(65536);
  while (!pending.empty()) {
    auto n = receive(fd_, buf, /*nonblocking=*/false);
    if (!n.ok()) {
      return absl::Status(n.status().code(), absl::StrCat("updating maps in table ", table,
                                                          ": the outcome is unknown: ", n.status().message()));
    }
    MessageReader reader(buf.data(), *n);
    nlmsghdr hdr;
    const uint8_t* payload = nullptr;
    size_t len = 0;
    while (reader.next(hdr, payload, len)) {
      if (hdr.nlmsg_seq < begin_seq || hdr.nlmsg_seq > end_seq) continue;  // a late answer to an earlier call
      if (hdr.nlmsg_type != NLMSG_ERROR) continue;
      int err = error_code(payload, len);
      if (err == 0) {
        pending.erase(hdr.nlmsg_seq);
        continue;
      }
      auto it = pending.find(hdr.nlmsg_seq);
      std::string what = it != pending.end() ? it->second : absl::StrCat("committing the batch for table ", table);
      drain_nonblocking();
      return errno_status(err, absl::StrCat("nf_tables rejected the transaction (nothing was changed): ", what));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, uint64_t>> NftNetlink::counter_packets(uint8_t family,
                                                                            const std::string& table) {
  // A dump that the kernel marks interrupted (the ruleset changed while it
  // ran) is asked again.
  for (int attempt = 0;; ++attempt) {
    MessageBuilder b;
    uint32_t seq = seq_++;
    size_t msg = b.begin_message(nft_type(NFT_MSG_GETOBJ), NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0);
    b.put_string(NFTA_OBJ_TABLE, table);
    uint32_t type = htonl(NFT_OBJECT_COUNTER);
    b.put_attr(NFTA_OBJ_TYPE, &type, sizeof type);
    b.end_message(msg);
    if (auto st = send_buffer(b.bytes()); !st.ok()) return st;

    std::map<std::string, uint64_t> out;
    bool interrupted = false;
    absl::Status error;
    auto st = read_replies(fd_, seq, [&](const nlmsghdr& hdr, const uint8_t* payload, size_t len) {
      if ((hdr.nlmsg_flags & NLM_F_DUMP_INTR) != 0) interrupted = true;
      if (hdr.nlmsg_type == NLMSG_DONE) return true;
      if (hdr.nlmsg_type == NLMSG_ERROR) {
        const int err = error_code(payload, len);
        if (err == 0) return false;
        error = errno_status(err, absl::StrCat("reading the counters of table ", table));
        return true;
      }
      if (hdr.nlmsg_type != nft_type(NFT_MSG_NEWOBJ) || len < kGenMsgLen) return false;
      std::string name, obj_table;
      uint32_t obj_type = 0;
      std::optional<uint64_t> packets;
      for_each_attr(payload + kGenMsgLen, len - kGenMsgLen, [&](uint16_t t, const uint8_t* d, size_t l) {
        if (t == NFTA_OBJ_NAME || t == NFTA_OBJ_TABLE) {
          std::string v(reinterpret_cast<const char*>(d), strnlen(reinterpret_cast<const char*>(d), l));
          (t == NFTA_OBJ_NAME ? name : obj_table) = std::move(v);
        } else if (t == NFTA_OBJ_TYPE && l >= sizeof obj_type) {
          std::memcpy(&obj_type, d, sizeof obj_type);
          obj_type = ntohl(obj_type);
        } else if (t == NFTA_OBJ_DATA) {
          for_each_attr(d, l, [&](uint16_t ct, const uint8_t* cd, size_t cl) {
            if (ct == NFTA_COUNTER_PACKETS && cl >= 8) packets = be64_value(cd);
          });
        }
      });
      if (obj_table == table && obj_type == NFT_OBJECT_COUNTER && !name.empty() && packets) out[name] = *packets;
      return false;
    });
    if (!st.ok()) return st;
    if (!error.ok()) {
      drain_nonblocking();
      return error;
    }
    if (!interrupted || attempt >= 3) return out;
  }
}

}  // namespace tern
