"""Helpers the tests share (servers, stacks, polling, certificates, fakes of the filesystem, deploy tools); no tests here."""
