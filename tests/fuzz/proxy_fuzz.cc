// libFuzzer target for the PROXY protocol header parser: no crash, no UB, and a header it
// accepts never claims more bytes than it was given.

#include <cstdint>
#include <cstdlib>

#include "net/proxy_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  chute::net::ProxyHeader header;
  size_t consumed = 0;
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  if (chute::net::ParseProxyHeader(input, &header, &consumed) == chute::net::ProxyParse::kDone &&
      (consumed == 0 || consumed > size)) {
    std::abort();
  }
  return 0;
}
