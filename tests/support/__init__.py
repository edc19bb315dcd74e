"""Code the tests share (data, fakes, apps served by real servers); no tests here."""
