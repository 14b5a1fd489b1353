// tls_test.cc: unit tests for TlsStream: a handshake and data both ways, buffer release.

#include "net/tls.h"

#include <gtest/gtest.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

namespace chute::net {
namespace {

// WritePem: `write` into the file at `path`; false when it cannot be opened or written.
template <typename Write>
bool WritePem(const std::string& path, Write write) {
  FILE* file = fopen(path.c_str(), "w");
  if (file == nullptr) {
    return false;
  }
  bool ok = write(file);
  return fclose(file) == 0 && ok;
}

// A fresh P-256 key and a self-signed certificate for "localhost", through PEM files in a
// temporary directory (TlsContext::Load reads files), as a server context; null on failure.
std::shared_ptr<TlsContext> SelfSignedContext() {
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  bssl::UniquePtr<X509> cert(X509_new());
  if (ec == nullptr || key == nullptr || cert == nullptr || !EC_KEY_generate_key(ec.get()) ||
      !EVP_PKEY_set1_EC_KEY(key.get(), ec.get())) {
    return nullptr;
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (!X509_set_version(cert.get(), 2) || !ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1) ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600) == nullptr ||
      !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                  reinterpret_cast<const uint8_t*>("localhost"), -1, -1, 0) ||
      !X509_set_issuer_name(cert.get(), name) || !X509_set_pubkey(cert.get(), key.get()) ||
      X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) {
    return nullptr;
  }
  std::string dir = ::testing::TempDir() + "/tls_test.XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    return nullptr;
  }
  std::string cert_path = dir + "/cert.pem";
  std::string key_path = dir + "/key.pem";
  bool written =
      WritePem(cert_path, [&](FILE* f) { return PEM_write_X509(f, cert.get()) == 1; }) &&
      WritePem(key_path, [&](FILE* f) {
        return PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
      });
  absl::StatusOr<std::shared_ptr<TlsContext>> context =
      written ? TlsContext::Load(cert_path, key_path)
              : absl::StatusOr<std::shared_ptr<TlsContext>>(absl::InternalError("PEM"));
  unlink(cert_path.c_str());
  unlink(key_path.c_str());
  rmdir(dir.c_str());
  return context.ok() ? *context : nullptr;
}

// Moves what `from` has to send into `to`; true if anything moved.
bool Pump(TlsStream& from, TlsStream& to) {
  std::string ciphertext;
  from.TakeCiphertext(&ciphertext);
  to.PutCiphertext(ciphertext);
  return !ciphertext.empty();
}

// A server stream and a client stream connected in memory.
class TlsStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::shared_ptr<TlsContext> server_context = SelfSignedContext();
    ASSERT_NE(server_context, nullptr);
    server_ = std::make_unique<TlsStream>(server_context);
    client_ = TlsStream::NewClient(TlsContext::NewClient());
  }

  void Handshake() {
    for (int round = 0; round < 10; ++round) {
      TlsStream::Result client = client_->Handshake();
      Pump(*client_, *server_);
      TlsStream::Result server = server_->Handshake();
      Pump(*server_, *client_);
      ASSERT_NE(client, TlsStream::Result::kError) << client_->Error();
      ASSERT_NE(server, TlsStream::Result::kError) << server_->Error();
      if (client == TlsStream::Result::kOk && server == TlsStream::Result::kOk) {
        return;
      }
    }
    FAIL() << "the handshake did not finish";
  }

  // Send: `plaintext` from `from` to `to`, read back whole by `to`.
  static std::string Send(TlsStream& from, TlsStream& to, const std::string& plaintext) {
    EXPECT_EQ(from.Write(plaintext), TlsStream::Result::kOk);
    Pump(from, to);
    std::string received;
    while (to.ReadPlaintext(&received, 16384) == TlsStream::Result::kOk) {
    }
    Pump(to, from);  // whatever the reader owes (TLS 1.3 tickets, key updates)
    return received;
  }

  std::unique_ptr<TlsStream> server_;
  std::unique_ptr<TlsStream> client_;
};

TEST_F(TlsStreamTest, ExchangesDataBothWaysAfterTheHandshake) {
  ASSERT_NO_FATAL_FAILURE(Handshake());
  EXPECT_STREQ(server_->Version(), "TLSv1.3");
  EXPECT_STRNE(server_->Cipher(), "");  // still known once the handshake config is shed
  std::string request(3000, 'q');
  std::string response(5000, 'r');
  EXPECT_EQ(Send(*client_, *server_, request), request);
  EXPECT_EQ(Send(*server_, *client_, response), response);
}

// An idle session held the most its memory BIOs had ever carried (the handshake's flights,
// the largest burst), for as long as it stayed open.
TEST_F(TlsStreamTest, ReleaseBuffersFreesTheDrainedMemoryBios) {
  ASSERT_NO_FATAL_FAILURE(Handshake());
  std::string burst(8192, 'b');
  ASSERT_EQ(Send(*client_, *server_, burst), burst);
  ASSERT_EQ(Send(*server_, *client_, burst), burst);
  EXPECT_GT(server_->BufferedBytes(), burst.size());  // both BIOs carried the burst
  server_->ReleaseBuffers();
  EXPECT_EQ(server_->BufferedBytes(), 0u);
  // The stream goes on with new BIOs.
  EXPECT_EQ(Send(*client_, *server_, "EHLO again\r\n"), "EHLO again\r\n");
  EXPECT_EQ(Send(*server_, *client_, "250 ok\r\n"), "250 ok\r\n");
}

TEST_F(TlsStreamTest, ReleaseBuffersKeepsBytesNotYetTaken) {
  ASSERT_NO_FATAL_FAILURE(Handshake());
  // Ciphertext received but not yet decrypted, and ciphertext not yet sent.
  ASSERT_EQ(client_->Write("NOOP\r\n"), TlsStream::Result::kOk);
  Pump(*client_, *server_);
  ASSERT_EQ(server_->Write("250 2.0.0 OK\r\n"), TlsStream::Result::kOk);
  server_->ReleaseBuffers();
  EXPECT_GT(server_->pending_ciphertext(), 0u);
  std::string received;
  ASSERT_EQ(server_->ReadPlaintext(&received, 16384), TlsStream::Result::kOk);
  EXPECT_EQ(received, "NOOP\r\n");
  Pump(*server_, *client_);
  std::string reply;
  ASSERT_EQ(client_->ReadPlaintext(&reply, 16384), TlsStream::Result::kOk);
  EXPECT_EQ(reply, "250 2.0.0 OK\r\n");
}

}  // namespace
}  // namespace chute::net
