"""Camera client, exam-day simulator, record and replay: everything that publishes frames."""
