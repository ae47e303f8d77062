"""This book's experiment machinery, above the library: the results cache with provenance, the cached runs, the
reproduction grid and the searches behind the tuned recipes, and the Opacus-tutorial baseline for benchmarks.
The core (train, privacy, fl) never imports anything here."""
