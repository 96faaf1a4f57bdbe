// The coordinator-store fetcher against a real gRPC server on loopback.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>

#include "agent/artifact_stager.h"
#include "tern/v1/agent.grpc.pb.h"

namespace tern {
namespace {

// Serves one blob in 4 chunks; the first `breaks` calls end with UNAVAILABLE
// after the first chunk, as a transfer cut off by a coordinator restart does.
class FlakyStore final : public tern::v1::AgentService::Service {
 public:
  FlakyStore(std::string blob, int breaks) : blob_(std::move(blob)), breaks_(breaks) {}
  grpc::Status FetchArtifact(grpc::ServerContext*, const tern::v1::FetchArtifactRequest* req,
                             grpc::ServerWriter<tern::v1::ArtifactChunk>* out) override {
    offsets_.push_back(req->offset());
    const bool breaks = calls_++ < breaks_;
    const size_t step = blob_.size() / 4;
    for (size_t at = req->offset(); at < blob_.size(); at += step) {
      tern::v1::ArtifactChunk c;
      c.set_offset(at);
      if (at == req->offset()) c.set_total_size(blob_.size());
      c.set_data(blob_.substr(at, step));
      out->Write(c);
      if (breaks) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "Connection reset by peer");
    }
    return grpc::Status::OK;
  }
  std::vector<uint64_t> offsets_;

 private:
  const std::string blob_;
  const int breaks_;
  int calls_ = 0;
};

class GrpcFetcherTest : public ::testing::Test {
 protected:
  void serve(int breaks) {
    store_ = std::make_unique<FlakyStore>(blob_, breaks);
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(store_.get());
    server_ = b.BuildAndStart();
    ASSERT_NE(port, 0);
    fetcher_ = make_grpc_artifact_fetcher("127.0.0.1:" + std::to_string(port));
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }
  absl::Status fetch(std::string& into) {
    return fetcher_->fetch("ab", [&](const char* d, std::size_t n) {
      into.append(d, n);
      return absl::OkStatus();
    });
  }

  const std::string blob_ = std::string(1000, 'a') + std::string(1000, 'b') + std::string(1000, 'c') + "end!";
  std::unique_ptr<FlakyStore> store_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ArtifactFetcher> fetcher_;
};

TEST_F(GrpcFetcherTest, ATransferCutOffOnceResumesWhereItStopped) {
  serve(/*breaks=*/1);
  std::string got;
  ASSERT_TRUE(fetch(got).ok());
  EXPECT_EQ(got, blob_) << "every byte once, in order";
  ASSERT_EQ(store_->offsets_.size(), 2u);
  EXPECT_EQ(store_->offsets_[1], blob_.size() / 4) << "resumed from the byte it reached";
}

TEST_F(GrpcFetcherTest, ATransferCutOffTwiceFailsSayingHowFarItGot) {
  serve(/*breaks=*/2);
  std::string got;
  auto st = fetch(got);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("Connection reset by peer"), std::string::npos) << st;
  EXPECT_NE(st.message().find("after " + std::to_string(2 * (blob_.size() / 4)) + " bytes"), std::string::npos) << st;
}

}  // namespace
}  // namespace tern
