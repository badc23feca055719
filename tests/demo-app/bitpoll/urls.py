from django.urls import path

from bitpoll.poll import views

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("whoami", views.whoami, name="whoami"),
    path("allocate", views.allocate, name="allocate"),
    path("slow", views.slow, name="slow"),
]
