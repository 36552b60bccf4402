// The GPU time of spans of one stream's work (begin() to end()), summed without a host wait on the
// hot path: spans that have run are added when polled, the others when awaited.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "kjit/device.hpp"

namespace kjit::driver {

class StreamSpans {
 public:
  void begin(StreamHandle stream);
  void end(StreamHandle stream);  // on the stream of the matching begin()
  // The milliseconds of every span ended so far that has run; with `wait`, of every one.
  double total_ms(bool wait);

 private:
  std::vector<std::pair<std::unique_ptr<Event>, std::unique_ptr<Event>>> open_;
  double ms_ = 0;
};

}  // namespace kjit::driver
