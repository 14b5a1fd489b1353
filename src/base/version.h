#pragma once

// The build's identity, for --version and chute_build_info: the CMake project version and the
// git revision the binary was built from ("unknown" outside a git checkout; "-dirty" when the
// tree had uncommitted changes). Generated at build time by cmake/version.cmake.

namespace chute {

extern const char* const kVersion;
extern const char* const kRevision;

}  // namespace chute
