"""taskgate as a service: the CLI (:mod:`.cli`), the supervisor behind ``taskgate up``
(:mod:`.supervisor`, :mod:`.instance`), the embedded Valkey and SMTP sink it may start
(:mod:`.embedded`, :mod:`.smtp_sink`), ``taskgate doctor`` (:mod:`.doctor`) and logging
(:mod:`.logs`)."""
