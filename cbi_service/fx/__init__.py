"""Monthly exchange rates to USD (§16), each with its source: what the 5W values issued money at."""
