#include "driver/stream_spans.hpp"

#include <cstddef>

namespace kjit::driver {

void StreamSpans::begin(StreamHandle stream) {
  total_ms(false);  // spans that have run give their events back: the list stays short
  // A span left open (its work failed to queue) times nothing: its events are recorded again.
  if (last_ended_) {
    if (spare_.empty()) {
      open_.emplace_back(std::make_unique<Event>(), std::make_unique<Event>());
    } else {
      open_.push_back(std::move(spare_.back()));
      spare_.pop_back();
    }
  }
  last_ended_ = false;
  open_.back().first->record(stream);
}

void StreamSpans::end(StreamHandle stream) {
  open_.back().second->record(stream);
  last_ended_ = true;
}

double StreamSpans::total_ms(bool wait) {
  const std::size_t ended = open_.size() - (last_ended_ ? 0 : 1);
  std::size_t n = 0;
  for (; n < ended; ++n) {
    auto& [first, last] = open_[n];
    if (wait) {
      last->synchronize();
    } else if (!last->done()) {
      break;
    }
    ms_ += last->elapsed_ms_since(*first);
  }
  for (std::size_t i = 0; i < n; ++i)
    spare_.push_back(std::move(open_[i]));
  open_.erase(open_.begin(), open_.begin() + static_cast<std::ptrdiff_t>(n));
  return ms_;
}

}  // namespace kjit::driver
