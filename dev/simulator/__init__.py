"""Plant simulator: real protocol peers serving realistic signals, with injectable faults."""
