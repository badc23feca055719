from django.apps import AppConfig


class PollConfig(AppConfig):
    name = "bitpoll.poll"
    label = "poll"
    verbose_name = "Poll"
