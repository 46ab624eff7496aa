// SHA-256 (FIPS 180-4), for the bundle integrity id (docs/bundle-format.md, "Integrity").
// Small and dependency-free: the runtime builds from PyPI/Debian packages alone.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace memae {

class Sha256 {
public:
    Sha256();
    void update(const void* data, std::size_t n);
    /// The digest; the object must not be updated afterwards.
    std::array<std::uint8_t, 32> digest();
    /// Lower-case hex of the digest.
    std::string hexdigest();

private:
    void block(const std::uint8_t* p);
    std::uint32_t h_[8];
    std::uint8_t buf_[64];
    std::size_t used_ = 0;
    std::uint64_t total_ = 0;  // bytes
};

}  // namespace memae
