#pragma once

// A tiny nf_tables client speaking NETLINK_NETFILTER directly, written against
// the kernel's UAPI headers only (no libmnl/libnftnl/libnftables, which are
// GPL). It does just what the nftables port mapper needs without forking nft:
// read the ruleset generation, replace the contents of maps in one atomic
// transaction, and read a table's named counters.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern {

// The new contents of one map whose key is a 32-bit integer in host byte order
// (what `numgen` and `jhash` produce) and whose data is a transport port (`tcp dport`,
// `udp dport`, kept in network byte order by the kernel; give it here in host
// order, it is converted).
struct NftMapContents {
  std::string map;
  std::vector<std::pair<uint32_t, uint16_t>> elements;  // key -> port
};

// One NETLINK_NETFILTER socket, open for the object's life, bound to the
// network namespace of the thread that called open(). Thread-compatible: one
// caller at a time. Every call waits at most a few seconds for the kernel.
class NftNetlink {
 public:
  // Errors: the socket cannot be opened (no nf_tables/nfnetlink in this
  // kernel: FAILED_PRECONDITION; no permission: PERMISSION_DENIED).
  static absl::StatusOr<std::unique_ptr<NftNetlink>> open();
  ~NftNetlink();
  NftNetlink(const NftNetlink&) = delete;
  NftNetlink& operator=(const NftNetlink&) = delete;

  // The ruleset generation id (NFT_MSG_GETGEN). It changes with every
  // committed nf_tables transaction in this network namespace, whoever made it
  // (nft, iptables-nft, firewalld, docker, ...).
  absl::StatusOr<uint32_t> get_generation();

  // One transaction that, for every map of `family`/`table` in `maps`, deletes
  // all its elements and adds the given ones. All of it takes effect at once,
  // or (on any error) none of it. The error names the map and operation that
  // failed and carries the kernel's errno as its code (ENOENT: NOT_FOUND when
  // the table or a map does not exist, ...). After an error the socket has
  // been drained and stays usable.
  absl::Status replace_map_elements(uint8_t family, const std::string& table,
                                    const std::vector<NftMapContents>& maps);

  // The packet count of every named counter of `family`/`table`, by name
  // (NFT_MSG_GETOBJ dump); empty when the table does not exist.
  absl::StatusOr<std::map<std::string, uint64_t>> counter_packets(uint8_t family, const std::string& table);

 private:
  explicit NftNetlink(int fd) : fd_(fd) {}
  absl::Status send_buffer(const std::vector<uint8_t>& buf);
  // Grows SO_SNDBUF/SO_RCVBUF so one batch and all its acks fit.
  void ensure_buffers(size_t send_bytes, size_t ack_count);
  void drain_nonblocking();

  int fd_ = -1;
  uint32_t seq_ = 1;
  size_t sndbuf_ = 0;
  size_t rcvbuf_ = 0;
};

}  // namespace tern
