// tls_test.cc: unit tests for TlsStream (a handshake and data both ways, buffer release), the
// client's verification of a server's certificate, and the private key's file mode.

#include "net/tls.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "test_certificates.h"

namespace chute::net {
namespace {

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
    client_ = TlsStream::NewClient(TlsContext::NewUnverifiedClient());
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

// ---------------------------------------------------------------------------------------------
// A client verifying the server's certificate (self-signed, CN=localhost, no subjectAltName).

constexpr const char* kSystemCaFile = "/etc/ssl/certs/ca-certificates.crt";

class VerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(files_.ok);
    absl::StatusOr<std::shared_ptr<TlsContext>> context =
        TlsContext::Load(files_.cert_path, files_.key_path);
    ASSERT_TRUE(context.ok()) << context.status();
    server_context_ = *context;
  }

  // Handshake: a fresh client of `client_context` expecting `server_name` against a fresh
  // server stream; the client's last result (kError as soon as it fails).
  TlsStream::Result Handshake(std::shared_ptr<TlsContext> client_context,
                              absl::string_view server_name) {
    server_ = std::make_unique<TlsStream>(server_context_);
    client_ = TlsStream::NewClient(std::move(client_context), server_name);
    TlsStream::Result client = TlsStream::Result::kWantMore;
    for (int round = 0; round < 10; ++round) {
      client = client_->Handshake();
      Pump(*client_, *server_);
      if (client == TlsStream::Result::kError) {
        return client;
      }
      TlsStream::Result server = server_->Handshake();
      Pump(*server_, *client_);
      if (client == TlsStream::Result::kOk && server == TlsStream::Result::kOk) {
        return client;
      }
    }
    return client;
  }

  // Client: a verifying client context trusting the server's own certificate, as `options`
  // say otherwise.
  std::shared_ptr<TlsContext> Client(TlsClientOptions options) {
    absl::StatusOr<std::shared_ptr<TlsContext>> context = TlsContext::NewClient(options);
    EXPECT_TRUE(context.ok()) << context.status();
    return context.ok() ? *context : nullptr;
  }
  TlsClientOptions Trusting() {
    TlsClientOptions options;
    options.ca_file = files_.cert_path;
    return options;
  }
  TlsClientOptions SystemStore() {
    TlsClientOptions options;
    options.ca_file = kSystemCaFile;
    return options;
  }

  SelfSigned files_;
  std::shared_ptr<TlsContext> server_context_;
  std::unique_ptr<TlsStream> server_;
  std::unique_ptr<TlsStream> client_;
};

TEST_F(VerifyTest, CertificateFromTheCaFileForTheExpectedNameVerifies) {
  ASSERT_EQ(Handshake(Client(Trusting()), "localhost"), TlsStream::Result::kOk) << client_->Error();
  EXPECT_EQ(client_->PeerUnverified(), "");
  EXPECT_FALSE(client_->RefusedCertificate());
}

TEST_F(VerifyTest, SelfSignedCertificateIsRefusedSayingWhy) {
  if (access(kSystemCaFile, R_OK) != 0) {
    GTEST_SKIP() << kSystemCaFile << " is missing (Debian: ca-certificates)";
  }
  ASSERT_EQ(Handshake(Client(SystemStore()), "localhost"), TlsStream::Result::kError);
  EXPECT_EQ(client_->Error(),
            "certificate verify failed: self signed certificate (certificate for localhost)");
  EXPECT_TRUE(client_->RefusedCertificate());
}

TEST_F(VerifyTest, NameMismatchIsRefusedNamingBothNames) {
  ASSERT_EQ(Handshake(Client(Trusting()), "mx.example.test"), TlsStream::Result::kError);
  EXPECT_EQ(client_->Error(),
            "name mismatch: certificate is for localhost, expected mx.example.test");
  EXPECT_EQ(client_->PeerUnverified(), client_->Error());
}

TEST_F(VerifyTest, AnAddressMatchesOnlyTheCertificatesIpAddresses) {
  // The common name "localhost" is no IP address, and a name is never compared with one.
  ASSERT_EQ(Handshake(Client(Trusting()), "127.0.0.1"), TlsStream::Result::kError);
  EXPECT_EQ(client_->Error(), "name mismatch: certificate is for localhost, expected 127.0.0.1");
}

TEST_F(VerifyTest, NoNameChecksTheChainOnly) {
  ASSERT_EQ(Handshake(Client(Trusting()), ""), TlsStream::Result::kOk) << client_->Error();
  EXPECT_EQ(client_->PeerUnverified(), "");
}

TEST_F(VerifyTest, PinOfTheServersKeyVerifies) {
  TlsClientOptions options = Trusting();
  TlsPin other{};
  other.fill(7);
  options.pins = {other, files_.pin};
  ASSERT_EQ(Handshake(Client(options), "localhost"), TlsStream::Result::kOk) << client_->Error();
  EXPECT_EQ(client_->PeerUnverified(), "");
}

TEST_F(VerifyTest, PinMismatchIsRefusedNamingTheServersPin) {
  TlsClientOptions options = Trusting();
  TlsPin other{};
  other.fill(7);
  options.pins = {other};
  ASSERT_EQ(Handshake(Client(options), "localhost"), TlsStream::Result::kError);
  EXPECT_EQ(client_->Error(),
            absl::StrCat("public key pin mismatch: the server's key is ", FormatTlsPin(files_.pin),
                         ", not one of tls_pins (certificate for localhost)"));
}

TEST_F(VerifyTest, WithoutEnforcementTheHandshakeCompletesAndRecordsWhy) {
  TlsClientOptions options = Trusting();
  options.enforce = false;
  ASSERT_EQ(Handshake(Client(options), "mx.example.test"), TlsStream::Result::kOk)
      << client_->Error();
  EXPECT_EQ(client_->PeerUnverified(),
            "name mismatch: certificate is for localhost, expected mx.example.test");
  EXPECT_FALSE(client_->RefusedCertificate());
}

TEST_F(VerifyTest, UnverifiedClientSaysItDidNotVerify) {
  ASSERT_EQ(Handshake(TlsContext::NewUnverifiedClient(), "localhost"), TlsStream::Result::kOk);
  EXPECT_EQ(client_->PeerUnverified(), "the server's certificate was not verified");
}

TEST(TlsClientTest, CaFileThatCannotBeReadOrHoldsNoCertificateIsAnError) {
  TlsClientOptions options;
  options.ca_file = "/nonexistent/ca.pem";
  absl::StatusOr<std::shared_ptr<TlsContext>> context = TlsContext::NewClient(options);
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.status().message(),
            "/nonexistent/ca.pem: cannot read the CA certificates: No such file or directory");
  TempDir dir;
  options.ca_file = dir.File("garbage.pem");
  ASSERT_TRUE(WritePem(options.ca_file, 0644, [](FILE* f) { return fputs("junk\n", f) >= 0; }));
  context = TlsContext::NewClient(options);
  ASSERT_FALSE(context.ok());
  EXPECT_TRUE(absl::StartsWith(context.status().message(),
                               absl::StrCat(options.ca_file, ": holds no CA certificate")))
      << context.status();
}

// ---------------------------------------------------------------------------------------------
// The private key's file mode.

TEST(PrivateKeyModeTest, OwnerOnlyOrOurGroupIsQuiet) {
  std::string warning = "x";
  EXPECT_TRUE(CheckPrivateKeyMode("/k.pem", 0100600, false, &warning).ok());
  EXPECT_EQ(warning, "");
  EXPECT_TRUE(CheckPrivateKeyMode("/k.pem", 0100640, true, &warning).ok());
  EXPECT_EQ(warning, "");
  EXPECT_TRUE(CheckPrivateKeyMode("/k.pem", 0100400, false, &warning).ok());
  EXPECT_EQ(warning, "");
}

TEST(PrivateKeyModeTest, AnotherGroupOrAWritableGroupWarns) {
  std::string warning;
  EXPECT_TRUE(CheckPrivateKeyMode("/k.pem", 0100640, false, &warning).ok());
  EXPECT_EQ(warning,
            "/k.pem: the private key is readable by its group (mode 0640), which is not a group "
            "chuted runs with; chgrp it to chuted's group or chmod g-r it");
  EXPECT_TRUE(CheckPrivateKeyMode("/k.pem", 0100660, true, &warning).ok());
  EXPECT_EQ(warning, "/k.pem: the private key is writable by its group (mode 0660); chmod g-w it");
}

TEST(PrivateKeyModeTest, EveryUserReadingOrWritingIsRefused) {
  std::string warning;
  for (uint32_t mode : {0100644u, 0100604u, 0100444u, 0100666u}) {
    absl::Status status = CheckPrivateKeyMode("/k.pem", mode, true, &warning);
    EXPECT_TRUE(absl::IsPermissionDenied(status)) << mode;
    EXPECT_TRUE(absl::StrContains(status.message(), "readable by every user")) << status;
  }
  absl::Status status = CheckPrivateKeyMode("/k.pem", 0100602, true, &warning);
  EXPECT_EQ(status.message(),
            "/k.pem: the private key is writable by every user (mode 0602); refusing it: chmod "
            "o-rwx it (0640 root:chute, or 0600 for chuted's user)");
}

TEST(PrivateKeyModeTest, LoadRefusesAKeyEveryUserCanRead) {
  SelfSigned files(0644);
  ASSERT_TRUE(files.ok);
  absl::StatusOr<std::shared_ptr<TlsContext>> context =
      TlsContext::Load(files.cert_path, files.key_path);
  ASSERT_FALSE(context.ok());
  EXPECT_TRUE(absl::IsPermissionDenied(context.status()));
  EXPECT_TRUE(absl::StartsWith(
      context.status().message(),
      absl::StrCat(files.key_path, ": the private key is readable by every user (mode 0644)")))
      << context.status();
  ASSERT_EQ(chmod(files.key_path.c_str(), 0600), 0);
  EXPECT_TRUE(TlsContext::Load(files.cert_path, files.key_path).ok());
}

}  // namespace
}  // namespace chute::net
