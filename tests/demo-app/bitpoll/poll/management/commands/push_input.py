"""Push text into this process's terminal input with TIOCSTI, as hostile app code could.

Used by the tests of `bitpoll-launcher manage`: run from an admin's terminal, the pushed
text must never reach the admin's shell. Prints what it found about its terminal.
"""
import fcntl
import os
import termios

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Try to push a command line into the terminal (TIOCSTI) and report the outcome."

    def add_arguments(self, parser):
        parser.add_argument("text")

    def handle(self, text, **options):
        for fd in (0, 1, 2):
            try:
                name = os.ttyname(fd)
            except OSError:
                name = None
            pushed = "no terminal"
            if name is not None:
                try:
                    for byte in (text + "\n").encode():
                        fcntl.ioctl(fd, termios.TIOCSTI, bytes([byte]))
                    pushed = "pushed"
                except OSError as e:
                    pushed = "refused (%s)" % e.strerror
            self.stdout.write("fd %d: tty=%s sid=%d %s" % (fd, name, os.getsid(0), pushed))
